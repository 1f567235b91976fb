// Admin panel behaviour, progressively enhancing plain HTML forms (everything works without it):
// confirmation of destructive forms, copy buttons, live monitoring counts, and dimming the
// experiment form's conditions that the chosen stimulus sets do not offer.

const POLL_MS = 10_000;

function confirmForms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }
}

function copyButtons() {
  for (const btn of document.querySelectorAll("button[data-copy]")) {
    btn.addEventListener("click", async () => {
      const target = document.getElementById(btn.dataset.copy);
      if (!target) return;
      const text = "value" in target && target.value !== undefined ? target.value : target.textContent;
      try {
        await navigator.clipboard.writeText(text);
        btn.textContent = "Copied";
      } catch (_) {
        if (target.select) target.select();
        btn.textContent = "Press Ctrl+C";
      }
      setTimeout(() => (btn.textContent = btn.dataset.copy.startsWith("xml") ? "Copy XML" : "Copy"), 2000);
    });
  }
}

function lookup(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function formatStat(path, value) {
  if (value === null || value === undefined) return "–";
  if (path.endsWith(".rate")) return `${Math.round(100 * value)}%`;
  return String(value);
}

function liveMonitor() {
  const box = document.querySelector("[data-monitor-url]");
  if (!box) return;
  const url = box.dataset.monitorUrl;
  const tick = async () => {
    if (document.hidden) return;
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) return;
      const data = await r.json();
      const flat = { ...data, status: data.status_counts };
      for (const el of document.querySelectorAll("[data-stat]")) {
        const v = lookup(flat, el.dataset.stat);
        el.textContent = formatStat(el.dataset.stat, v ?? (el.dataset.stat.startsWith("status.") ? 0 : null));
      }
      for (const row of data.slots || []) {
        const tr = document.querySelector(`tr[data-slot="${row.row}"]`);
        if (!tr) continue;
        const done = tr.querySelector("[data-slot-completed]");
        const running = tr.querySelector("[data-slot-running]");
        if (done) done.textContent = String(row.completed);
        if (running) running.textContent = String(row.in_progress);
      }
    } catch (_) {
      /* offline for a moment; try again next tick */
    }
  };
  setInterval(tick, POLL_MS);
}

function conditionFilter() {
  const form = document.querySelector("form[data-form=experiment]");
  if (!form) return;
  const update = () => {
    const chosen = [...form.querySelectorAll("input[name=stimulus_sets]:checked")].map((i) => i.value);
    for (const label of form.querySelectorAll("[data-condition-sets]")) {
      const sets = label.dataset.conditionSets.split(" ").filter(Boolean);
      const offered = chosen.length === 0 || sets.some((s) => chosen.includes(s));
      label.classList.toggle("dimmed", !offered);
    }
  };
  form.addEventListener("change", update);
  update();
}

confirmForms();
copyButtons();
liveMonitor();
conditionFilter();
