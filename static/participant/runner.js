// The experiment runner: one page that walks a participant through consent, instructions,
// (headphone check,) practice, the gate, the main trials with breaks, debrief and completion.
//
// All progress lives on the server; this page derives where to continue from GET /api/session,
// plus answers still waiting in the local outbox, so a reload resumes at the first unanswered
// trial. The page only leaves for the recruitment site after the server has confirmed everything.

import { Api, HttpError, Outbox } from "./api.js";
import { MediaLoader } from "./media.js";
import { AudioEngine, makeMask, measureFrameInterval, nextFrame, presentImage } from "./trials.js";
import { buttonGrid, el, message, progressBar, screen, setStatus, typedAnswer } from "./ui.js";

const PREFETCH_AHEAD = 10;
const FEEDBACK_MS = 1000;

function readToken() {
  const slug = location.pathname.split("/")[2] || "";
  const key = `mm-token:${slug}`;
  const m = /(?:^#|&)t=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (m) {
    try {
      sessionStorage.setItem(key, m[1]);
    } catch (_) {
      /* private mode */
    }
    return m[1];
  }
  try {
    return sessionStorage.getItem(key);
  } catch (_) {
    return null;
  }
}

function browserSupported(modality) {
  const basics = "fetch" in window && "Promise" in window && "requestAnimationFrame" in window && "localStorage" in window;
  const audio = modality !== "audio" || "AudioContext" in window || "webkitAudioContext" in window;
  return basics && audio;
}

function looksMobile() {
  const coarse = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  // window.screen: the bare name `screen` is ui.js's screen() here, whose width is undefined.
  return coarse && Math.min(window.screen.width || 9999, window.screen.height || 9999) < 700;
}

class Runner {
  constructor(token) {
    this.api = new Api(token);
    this.outbox = new Outbox(this.api, `mm-outbox:${token.slice(0, 24)}`);
    this.answered = new Set();
    this.engine = new AudioEngine();
    this.frameMs = 16.7;
    this.trialEvents = null;
    this.outbox.onChange(({ pending, failures, online }) => {
      const answers = `${pending} answer${pending === 1 ? "" : "s"}`;
      if (failures > 0 || !online) setStatus(`Connection problem: ${answers} saved on this computer, sending when the connection is back.`, "warn");
      else if (pending > 3) setStatus(`Saving ${answers}…`);
      else setStatus("");
    });
    for (const type of ["blur", "focus"]) window.addEventListener(type, () => this._event(type));
    document.addEventListener("visibilitychange", () => this._event(document.hidden ? "hidden" : "visible"));
  }

  _event(type, detail) {
    if (this.trialEvents) this.trialEvents.push(detail ? { type, t: performance.now(), detail } : { type, t: performance.now() });
  }

  report(ev) {
    this.outbox.add("/api/session/events", { events: [ev] }).catch(() => {});
  }

  async loadState() {
    const { data } = await this.api.persistent("GET", "/api/session", undefined, () => setStatus("Connecting to the server…", "warn"));
    setStatus("");
    this.state = data;
    for (const i of data.answered) this.answered.add(i);
    for (const item of this.outbox.pending()) {
      if (item.path === "/api/session/responses") this.answered.add(item.body.trial_index);
    }
    return data;
  }

  get exp() {
    return this.state.experiment;
  }

  // The stage, taking answers still in the outbox into account.
  stage() {
    const s = this.state.stage;
    if (!["practice", "gate", "main", "debrief"].includes(s)) return s;
    const next = this.state.trials.find((t) => !this.answered.has(t.index));
    if (!next) return "debrief";
    return next.phase === "catch" ? "main" : next.phase;
  }

  async run() {
    await this.loadState();
    // Answers left in this browser by an earlier visit (a reload, a crash) are sent right away,
    // not only when the next answer is queued.
    if (this.outbox.size()) this.outbox.poke();
    if (!browserSupported(this.exp.modality)) {
      screen("unsupported", el("h1", {}, "Browser not supported"), el("p", {}, "Please use a recent version of Chrome, Firefox, Edge or Safari on a computer."));
      return;
    }
    if (!this.exp.allow_mobile && looksMobile() && this.state.stage === "consent") {
      screen("unsupported", el("h1", {}, "Computer needed"), el("p", {}, "This study needs a desktop or laptop computer. Please open the link on a computer."));
      return;
    }
    this.loader = new MediaLoader({
      decodeAudio: this.exp.modality === "audio" ? (buf) => this.engine.decode(buf) : null,
      report: (ev) => this.report(ev),
      onTrouble: (url) => setStatus(url ? "Having trouble loading the next stimulus; retrying…" : "", url ? "warn" : "info"),
    });
    this.frameMs = await measureFrameInterval(20);
    for (;;) {
      const stage = this.stage();
      if (stage === "consent") await this.consent();
      else if (stage === "instructions") await this.instructions();
      else if (stage === "headphone") await this.headphone();
      else if (["practice", "gate", "main"].includes(stage)) {
        await this.trials();
        if (this.state.stage === "ended") return;
      } else if (stage === "debrief") return this.finish();
      else if (stage === "ended") return this.ended(this.state.ended);
      else throw new Error(`unknown stage ${stage}`);
    }
  }

  async consent() {
    document.title = this.exp.title;
    const decline = el("button", { type: "button", class: "secondary", "data-action": "decline" }, "I do not agree");
    const agree = el("button", { type: "button", class: "primary", "data-action": "agree" }, "I agree");
    // The heading takes the focus, not a button: neither answer looks pre-selected and a stray
    // Enter decides nothing; Tab reaches the two buttons.
    screen("consent", el("h1", { tabindex: "-1", autofocus: true }, this.exp.title), el("h2", {}, "Consent"), el("div", { class: "text", html: this.exp.texts.consent }), el("div", { class: "actions" }, decline, agree));
    const choice = await new Promise((resolve) => {
      agree.addEventListener("click", () => resolve(true), { once: true });
      decline.addEventListener("click", () => resolve(false), { once: true });
    });
    if (!choice) {
      // Ask once more: declining ends the session for good (and frees the place for someone else).
      const back = el("button", { type: "button", class: "secondary", "data-action": "back" }, "Back to the consent form");
      const leave = el("button", { type: "button", class: "primary", "data-action": "confirm-decline" }, "Yes, I do not want to take part");
      screen("decline-confirm", el("h1", { tabindex: "-1", autofocus: true }, "Not taking part?"), el("p", {}, "If you do not agree, the study ends here and you cannot restart it."), el("div", { class: "actions" }, back, leave));
      const sure = await new Promise((resolve) => {
        leave.addEventListener("click", () => resolve(true), { once: true });
        back.addEventListener("click", () => resolve(false), { once: true });
      });
      if (!sure) return;
      await this.api.persistent("POST", "/api/session/decline");
      this.state.stage = "ended";
      this.state.ended = { status: "returned", outcome: "declined" };
      return;
    }
    if (this.exp.modality === "audio") await this.engine.unlock();
    const browser = {
      screen_width: window.screen.width,
      screen_height: window.screen.height,
      window_width: window.innerWidth,
      window_height: window.innerHeight,
      device_pixel_ratio: window.devicePixelRatio,
      frame_ms: Math.round(this.frameMs * 100) / 100,
      language: (navigator.language || "").slice(0, 64),
      timezone: (Intl.DateTimeFormat().resolvedOptions().timeZone || "").slice(0, 64),
      touch: "ontouchstart" in window,
    };
    const { data } = await this.api.persistent("POST", "/api/session/consent", { agree: true, browser });
    this.state.stage = data.stage;
  }

  async instructions() {
    const ev = await message("instructions", { title: "Instructions", html: this.exp.texts.instructions, button: "Start" });
    if (ev && this.exp.modality === "audio") await this.engine.unlock();
    const { data } = await this.api.persistent("POST", "/api/session/instructions");
    this.state.stage = data.stage;
  }

  async headphone() {
    const mod = await import("./headphone.js");
    await mod.runHeadphoneCheck(this);
    await this.loadState();
  }

  // Run trials from the first unanswered one, in order, until all are done or the server must
  // decide how to go on (the gate result, a headphone check before the main part).
  async trials() {
    const trials = this.state.trials;
    const isMain = (x) => x && (x.phase === "main" || x.phase === "catch");
    const mainTotal = trials.filter(isMain).length;
    let prev = null;
    for (let k = 0; k < trials.length; k += 1) {
      const t = trials[k];
      if (this.answered.has(t.index)) {
        prev = t;
        continue;
      }
      if (isMain(t) && !isMain(prev) && !this.mainCleared) {
        const stage = await this.checkpoint();
        if (stage === "ended") return this.ended(this.state.ended);
        if (stage === "headphone") return;
        this.mainCleared = true;
      }
      await this.transition(prev, t, mainTotal);
      // Later trials' media load while this one waits for the answer, not while its stimulus is
      // on screen: fetching and decoding compete with frame-locked presentation for the CPU.
      const prefetch = () => this.loader.prefetch(trials.slice(k + 1, k + 1 + PREFETCH_AHEAD).map((x) => x.media));
      await this.runTrial(t, isMain(t) ? { done: this.mainDone(), total: mainTotal } : null, prefetch);
      prev = t;
    }
    this.state.stage = "debrief";
  }

  mainDone() {
    return this.state.trials.filter((t) => (t.phase === "main" || t.phase === "catch") && this.answered.has(t.index)).length;
  }

  // Wait until every answer is stored, then reload the server's view (gate result, headphone check).
  async checkpoint() {
    if (this.outbox.size()) {
      // Usually the last answer is confirmed within a few ms; show the saving screen only when it
      // takes longer, so it does not flash up between every practice part and the main part.
      const slow = setTimeout(() => screen("saving", el("h1", {}, "Saving…"), el("p", {}, "Please wait while your answers are saved.")), 300);
      try {
        await this.outbox.drain();
      } finally {
        clearTimeout(slow);
      }
    }
    await this.loadState();
    return this.state.stage;
  }

  async transition(prev, t, mainTotal) {
    const phaseOf = (x) => (x ? (x.phase === "catch" ? "main" : x.phase) : null);
    const from = phaseOf(prev);
    const to = phaseOf(t);
    // The first phase screen also says what a trial looks like and how to answer.
    const how = from === null ? el("p", { class: "how" }, this.howTrialsWork()) : null;
    if (to === "practice" && from === null) {
      const n = this.state.trials.filter((x) => x.phase === "practice").length;
      await message("phase", { title: "Practice", text: `First, ${n} practice trial${n > 1 ? "s" : ""}${this.exp.practice_feedback ? ". After each one you will see whether you were right" : ""}.`, extra: how, button: "Begin practice" });
    } else if (to === "gate" && from !== "gate") {
      await message("phase", { title: from === "practice" ? "Practice complete" : "Warm-up", text: `Next come ${this.exp.gate.trials} trials without feedback. Do your best: you need at least ${this.exp.gate.min_correct} correct to continue.`, extra: how, button: "Begin" });
    } else if (to === "main" && from !== "main") {
      const breaks = this.exp.breaks ? ` There will be ${this.exp.breaks} short break${this.exp.breaks > 1 ? "s" : ""}.` : "";
      await message("phase", { title: "Main part", text: `Now the main part begins: ${mainTotal} trials without feedback.${breaks}`, extra: how, button: "Begin" });
    } else if (to === "main" && from === "main" && t.block !== prev.block) {
      const blocks = Math.max(...this.state.trials.map((x) => x.block)) + 1;
      await message("break", { title: "Break", text: `You have finished part ${prev.block + 1} of ${blocks}. Take a short break if you like, then continue.`, button: "Continue" });
    }
  }

  howTrialsWork() {
    const typed = this.exp.response.mode === "typed";
    const answer = typed ? "type the word you heard and pick it from the list" : "choose your answer (click it, or use the arrow keys and Enter)";
    if (this.exp.modality === "audio") {
      return `On each trial, press “Play sound” to hear a short clip. It plays ${this.exp.play_once ? "only once, so listen carefully" : "when you press the button"}. When it has finished, ${answer}.`;
    }
    return `Each trial starts with a cross in the middle of the screen: look at it. An image then flashes briefly, followed by a noise pattern. Then ${answer}.`;
  }

  async media(url) {
    const slow = setTimeout(() => screen("loading", el("p", {}, "Loading…")), 150);
    try {
      return await this.loader.get(url);
    } finally {
      clearTimeout(slow);
    }
  }

  // How many times this browser has started presenting trial `index`: 1 normally, more when the
  // page was reloaded (or crashed) between the stimulus and the answer. Sent with the answer as
  // client.presentations, so researchers can see and exclude stimuli seen or heard twice.
  countPresentation(index) {
    const key = `${this.outbox.key}:presented`;
    let seen = {};
    try {
      seen = JSON.parse(localStorage.getItem(key) || "{}") || {};
    } catch (_) {
      seen = {};
    }
    seen[index] = (seen[index] || 0) + 1;
    try {
      localStorage.setItem(key, JSON.stringify(seen));
    } catch (_) {
      /* storage full or disabled: the count is still sent */
    }
    return seen[index];
  }

  async runTrial(t, progress, prefetch = () => {}) {
    const media = await this.media(t.media);
    const timing = t.phase === "practice" ? this.exp.practice_timing : this.exp.timing;
    const response = this.exp.response.mode === "typed" ? typedAnswer(this.exp.categories, { disabled: true }) : buttonGrid(this.exp.categories, { show: this.exp.response.show, columns: this.exp.response.columns, disabled: true });
    const header = el("div", { class: "trial-header" }, progress ? progressBar(progress.done, progress.total) : el("div", { class: "phase-label" }, t.phase === "practice" ? "Practice" : "Warm-up"));
    const stageBox = el("div", { class: "stage", "data-trial": String(t.index) });
    const answerBox = el("div", { class: "answer hidden" }, response.node);
    const card = screen("trial", header, stageBox, answerBox);
    card.dataset.phase = t.phase;
    this.trialEvents = [];
    let shownAt;
    let onset;
    let durations;
    let client = { frame_ms: Math.round(this.frameMs * 100) / 100 };
    if (this.exp.modality === "image") {
      const img = media.cloneNode();
      await img.decode().catch(() => {});
      const mask = makeMask(this.exp.image_px, t.index + 1);
      stageBox.style.width = stageBox.style.height = `${this.exp.image_px}px`;
      img.style.width = img.style.height = `${this.exp.image_px}px`;
      client.presentations = this.countPresentation(t.index);
      const r = await presentImage(stageBox, img, mask, timing, this.frameMs);
      stageBox.classList.add("done");
      answerBox.classList.remove("hidden");
      response.enable();
      prefetch();
      onset = await nextFrame();
      shownAt = r.shownAt;
      durations = r.durations;
      client = { ...client, ...r.frames, target_stimulus_ms: timing.stimulus_ms };
    } else {
      const play = el("button", { type: "button", class: "primary play", "data-action": "play", autofocus: true }, "▶ Play sound");
      const note = el("p", { class: "hint" }, this.exp.play_once ? "The sound plays once. Listen carefully." : "Listen, then answer.");
      stageBox.replaceChildren(play, note);
      play.focus();
      await new Promise((resolve) => play.addEventListener("click", resolve, { once: true }));
      await this.engine.unlock();
      play.disabled = true;
      play.textContent = "Playing…";
      client.presentations = this.countPresentation(t.index);
      const r = await this.engine.play(media);
      play.textContent = "Played";
      note.textContent = "Now give your answer.";
      answerBox.classList.remove("hidden");
      response.enable();
      prefetch();
      onset = r.endedPerf;
      shownAt = r.shownAt;
      durations = { audio_ms: r.audio_ms };
      client = { ...client, expected_audio_ms: r.expected_ms, audio_state: this.engine.ctx.state };
    }
    response.focusFirst();
    const { answer, time } = await response.chosen;
    const body = {
      trial_index: t.index,
      answer,
      rt_ms: Math.round((time - onset) * 100) / 100,
      shown_at: shownAt || null,
      responded_at: Date.now(),
      durations,
      events: this.trialEvents.slice(0, 500),
      client,
    };
    this.trialEvents = null;
    const saved = this.outbox.add("/api/session/responses", body);
    this.answered.add(t.index);
    saved.catch((err) => {
      if (err instanceof HttpError && err.status === 409) this.report({ kind: "conflict", trial_index: t.index, detail: err.message.slice(0, 480) });
    });
    if (t.phase === "practice" && this.exp.practice_feedback && t.answer) {
      const ok = answer === t.answer;
      const label = (this.exp.categories.find((c) => c.id === t.answer) || {}).label || t.answer;
      const fb = el("div", { class: `feedback ${ok ? "correct" : "incorrect"}`, role: "status", "data-correct": ok ? "true" : "false" }, ok ? "Correct!" : `Incorrect. The answer was “${label}”.`);
      // Show the feedback where the stimulus was (above the answers, always on screen), and
      // mark the right answer among the buttons.
      stageBox.after(fb);
      for (const b of answerBox.querySelectorAll("[data-category]")) if (b.dataset.category === t.answer) b.classList.add("right-answer");
      await new Promise((r) => setTimeout(r, FEEDBACK_MS));
    }
  }

  async finish() {
    await message("debrief", { title: "About this study", html: this.exp.texts.debrief, button: "Finish" });
    screen("saving", el("h1", {}, "Saving your answers…"), el("p", {}, "Please keep this page open until your answers are saved."));
    await this.outbox.drain();
    let info;
    for (;;) {
      try {
        ({ data: info } = await this.api.persistent("POST", "/api/session/complete", undefined, () => setStatus("Connection problem: trying to reach the server. Please keep this page open.", "warn")));
        setStatus("");
        break;
      } catch (err) {
        if (err instanceof HttpError && err.status === 409 && err.data && err.data.missing) {
          // The server lacks answers (e.g. refused ones): resume at the first missing trial.
          await this.loadState();
          for (const i of err.data.missing) this.answered.delete(i);
          return this.run();
        }
        throw err;
      }
    }
    return this.ended(info);
  }

  async ended(info) {
    const target = info && info.target;
    const outcome = (info && info.outcome) || "completed";
    const code = target && target.code;
    // Without a redirect the participant must type the code into the recruitment site: say so.
    const codeBox = code
      ? el("div", {}, el("p", { class: "code" }, outcome === "completed" ? "Your completion code: " : "Your code: ", el("strong", { "data-code": code }, code)), target.kind === "code" ? el("p", { class: "hint" }, "Please copy this code and enter it on the site where you found this study.") : null)
      : null;
    if (outcome === "screened_out") {
      const go = target && target.kind !== "code" ? el("button", { type: "button", class: "primary", "data-action": "return" }, "Return to the study site") : null;
      screen("screened-out", el("h1", {}, "Thank you"), el("p", {}, "Unfortunately you did not meet the requirements to continue this study. Thank you for your time."), codeBox, go ? el("div", { class: "actions" }, go) : null);
      if (go) go.addEventListener("click", () => this.leave(target), { once: true });
      return;
    }
    if (outcome === "declined") {
      screen("declined", el("h1", {}, "Thank you"), el("p", {}, "You chose not to take part. You can close this page and return the study on the recruitment site."));
      return;
    }
    if (info && info.status !== "completed" && !target) {
      screen("ended", el("h1", {}, "Session ended"), el("p", {}, "This session has ended. Thank you."));
      return;
    }
    screen("complete", el("h1", {}, "All done. Thank you!"), el("p", {}, target && target.kind !== "code" ? "Your answers are saved. Taking you back to the study site…" : "Your answers are saved."), codeBox);
    if (target && target.kind !== "code") this.leave(target);
  }

  leave(target) {
    if (target.kind === "redirect") {
      window.location.assign(target.url);
    } else if (target.kind === "mturk") {
      const form = el("form", { method: "POST", action: target.action });
      for (const [k, v] of Object.entries(target.fields)) form.append(el("input", { type: "hidden", name: k, value: v }));
      document.body.append(form);
      form.submit();
    }
  }
}

async function start() {
  const token = readToken();
  if (!token) {
    screen("error", el("h1", {}, "Link incomplete"), el("p", {}, "Please open this study from the link on the recruitment site."));
    return;
  }
  const runner = new Runner(token);
  window.__runner = runner; // for debugging and browser tests
  try {
    await runner.run();
  } catch (err) {
    console.error(err);
    const detail = err instanceof HttpError && err.status === 401 ? "Your session could not be found. Please reopen the study link from the recruitment site." : "Something went wrong. Your answers so far are saved. Please reload the page to continue.";
    screen("error", el("h1", {}, "Problem"), el("p", {}, detail), el("div", { class: "actions" }, el("button", { type: "button", class: "primary", onclick: () => location.reload() }, "Reload")));
  }
}

start();
