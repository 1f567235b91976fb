// DOM helpers, screens and response widgets. No framework: plain elements, real <button>s
// (keyboard accessible by default), and text set with textContent unless the server sent
// sanitized HTML (the researcher's Markdown texts).

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v; // CSSOM: allowed by the CSP, unlike a style attribute
    else if (k === "html") node.innerHTML = v; // only for server-sanitized Markdown
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const root = () => document.getElementById("app");

// Replace the page with one screen. `name` is exposed as data-screen for tests and screenshots.
export function screen(name, ...children) {
  const card = el("section", { class: `card screen-${name}`, "data-screen": name }, ...children);
  root().replaceChildren(card);
  const focusable = card.querySelector("[autofocus]") || card.querySelector("button:not([disabled]), input");
  if (focusable) focusable.focus({ preventScroll: true });
  return card;
}

// A screen with text and one button; resolves when the button is pressed.
export function message(name, { title, html, text, button = "Continue", extra = null }) {
  return new Promise((resolve) => {
    const btn = el("button", { class: "primary", type: "button", autofocus: true, "data-action": "continue" }, button);
    screen(
      name,
      title ? el("h1", {}, title) : null,
      html ? el("div", { class: "text", html }) : null,
      text ? el("p", {}, text) : null,
      extra,
      button ? el("div", { class: "actions" }, btn) : null,
    );
    btn.addEventListener("click", (ev) => resolve(ev), { once: true });
  });
}

// Small status line for saving/connection problems, shown on every screen.
export function statusBar() {
  let bar = document.getElementById("status");
  if (!bar) {
    bar = el("div", { id: "status", class: "status", role: "status", "aria-live": "polite" });
    document.body.append(bar);
  }
  return bar;
}

export function setStatus(text, kind = "info") {
  const bar = statusBar();
  bar.textContent = text || "";
  bar.className = `status ${kind}${text ? " visible" : ""}`;
}

export function progressBar(done, total) {
  const pct = total ? Math.round((100 * done) / total) : 0;
  return el(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(total), "aria-valuenow": String(done), "aria-label": "Progress" },
    el("div", { class: "progress-fill", style: `width:${pct}%` }),
  );
}

// A grid of category buttons. Resolves with the chosen category id and the click time.
// Arrow keys move between buttons; Enter/Space choose (native button behaviour).
export function buttonGrid(categories, { show = "labels", columns = null, disabled = false } = {}) {
  const cols = columns || Math.min(categories.length, categories.length > 12 ? 6 : categories.length > 6 ? 5 : categories.length);
  // The grid itself takes the focus when it appears (tabindex -1), not its first button: no
  // category looks pre-selected, and a stray Enter cannot answer. Arrow keys or Tab enter it.
  const grid = el("div", { class: "response-grid", role: "group", tabindex: "-1", "aria-label": "Your answer", style: `grid-template-columns: repeat(${cols}, minmax(0, 1fr))` });
  let choose;
  const chosen = new Promise((resolve) => (choose = resolve));
  const buttons = categories.map((c) => {
    const showIcon = show !== "labels" && c.icon;
    const showLabel = show !== "icons" || !c.icon;
    const b = el(
      "button",
      { type: "button", class: "choice", "data-category": c.id, "aria-label": c.label, disabled },
      showIcon ? el("img", { src: c.icon, alt: "", draggable: "false" }) : null,
      showLabel ? el("span", {}, c.label) : null,
    );
    b.addEventListener("click", () => {
      const t = performance.now();
      for (const x of buttons) x.disabled = true;
      b.classList.add("chosen");
      choose({ answer: c.id, time: t });
    });
    return b;
  });
  grid.addEventListener("keydown", (ev) => {
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols };
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) {
      if (ev.target === grid && ev.key in moves) {
        ev.preventDefault();
        buttons.find((b) => !b.disabled)?.focus();
      }
      return;
    }
    if (ev.key in moves) {
      ev.preventDefault();
      const j = Math.max(0, Math.min(buttons.length - 1, i + moves[ev.key]));
      buttons[j].focus();
    }
  });
  grid.append(...buttons);
  const hint = el("p", { class: "hint grid-hint" }, "Click your answer, or use the arrow keys and Enter.");
  return {
    node: el("div", { class: "buttons-answer" }, grid, hint),
    chosen,
    enable() {
      for (const b of buttons) b.disabled = false;
    },
    focusFirst() {
      grid.focus({ preventScroll: true });
    },
  };
}

// Typed answer with autocomplete over the vocabulary. Submitting is possible only when the text is
// exactly a vocabulary word (case-insensitive); the answer is that word's category id.
export function typedAnswer(categories, { disabled = false } = {}) {
  const words = categories.map((c) => ({ id: c.id, label: c.label, key: c.label.toLowerCase() }));
  const byKey = new Map();
  for (const w of words) {
    byKey.set(w.key, w);
    byKey.set(w.id.toLowerCase(), w);
  }
  const listId = `suggest-${Math.random().toString(36).slice(2)}`;
  const input = el("input", {
    type: "text",
    class: "typed",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    role: "combobox",
    "aria-autocomplete": "list",
    "aria-expanded": "false",
    "aria-controls": listId,
    "aria-label": "Type the word you heard",
    placeholder: "Type the word you heard",
    disabled,
  });
  const list = el("ul", { id: listId, class: "suggestions", role: "listbox" });
  const submit = el("button", { type: "button", class: "primary", disabled: true, "data-action": "submit" }, "Submit");
  const hint = el("p", { class: "hint" }, "Choose a word from the list. Only listed words can be submitted.");
  let active = -1;
  let current = [];
  let choose;
  const chosen = new Promise((resolve) => (choose = resolve));

  const match = () => byKey.get(input.value.trim().toLowerCase());
  const render = () => {
    const q = input.value.trim().toLowerCase();
    current = !q ? [] : words.filter((w) => w.key.startsWith(q)).concat(words.filter((w) => !w.key.startsWith(q) && w.key.includes(q))).slice(0, 8);
    list.replaceChildren(
      ...current.map((w, i) =>
        el("li", { role: "option", id: `${listId}-${i}`, class: i === active ? "active" : "", "aria-selected": i === active ? "true" : "false", "data-word": w.id, onmousedown: (ev) => { ev.preventDefault(); pick(w); } }, w.label),
      ),
    );
    input.setAttribute("aria-expanded", current.length ? "true" : "false");
    if (active >= 0) input.setAttribute("aria-activedescendant", `${listId}-${active}`);
    else input.removeAttribute("aria-activedescendant");
    submit.disabled = !match();
  };
  const pick = (w) => {
    input.value = w.label;
    active = -1;
    render();
    current = [];
    list.replaceChildren();
    input.focus();
  };
  const send = () => {
    const w = match();
    if (!w) return;
    const t = performance.now();
    input.disabled = true;
    submit.disabled = true;
    choose({ answer: w.id, time: t });
  };
  input.addEventListener("input", () => {
    active = -1;
    render();
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown" && current.length) {
      ev.preventDefault();
      active = (active + 1) % current.length;
      render();
    } else if (ev.key === "ArrowUp" && current.length) {
      ev.preventDefault();
      active = (active - 1 + current.length) % current.length;
      render();
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      if (active >= 0 && current[active]) pick(current[active]);
      else send();
    } else if (ev.key === "Escape") {
      active = -1;
      current = [];
      list.replaceChildren();
    }
  });
  submit.addEventListener("click", send);
  return {
    node: el("div", { class: "typed-answer" }, el("div", { class: "combo" }, input, list), submit, hint),
    chosen,
    enable() {
      input.disabled = false;
      input.focus();
    },
    focusFirst() {
      input.focus();
    },
  };
}
