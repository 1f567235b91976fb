// Headphone screening (docs/science.md §5): instructions → calibration noise → check trials.
//
// The server decides everything (app/participation/headphone/screening.py): which part of the
// check is due, whether an answer is accepted, pass or fail. This page only plays sounds and records answers. Every answer
// goes through the runner's outbox, exactly like a main-trial response: it is kept in
// localStorage until the server confirms it, retried with backoff, and idempotent (an identical
// retry is answered 200), so a reload resumes at the first trial without a stored answer.
//
// Each trial's sound plays once, on a click (which also unlocks Web Audio); the answer buttons are
// enabled only when playback has ended. Files are stereo and are played as 2-channel AudioBuffers
// straight to the output, never downmixed: both checks depend on each ear getting its own channel.
//
// DOM hooks for browser tests: every screen has data-screen (headphone-intro,
// headphone-calibration, headphone-instructions, headphone-trial, headphone-saving), buttons have
// data-action (continue, play-calibration, play) and the answers data-choice="1|2|3".

import { HttpError } from "./api.js";
import { el, message, progressBar, root, screen } from "./ui.js";

const STATE = "/api/session/headphone";
const ANSWERS = "/api/session/headphone/responses";
const ORDINALS = ["First", "Second", "Third"];
const PLAYING_OUTLINE = "3px solid #2f6fed";

const TASKS = {
  antiphase: {
    title: "Which sound is the quietest?",
    intro: "On each trial you will hear three tones, one after the other. Choose the tone that is the quietest (softest).",
    question: "Which tone was the quietest?",
  },
  huggins: {
    title: "Which noise contains a faint tone?",
    intro: "On each trial you will hear three bursts of noise, one after the other. One of them contains a faint tone hidden in the noise. Choose the noise that contains the tone.",
    question: "Which noise contained the faint tone?",
  },
};

async function fetchState(runner) {
  const { data } = await runner.api.persistent("GET", STATE);
  return data;
}

// Indices of this part's answers still waiting in the outbox (e.g. left by a reload).
function queued(runner, check, attempt) {
  const out = new Set();
  for (const item of runner.outbox.pending()) {
    if (item.path === ANSWERS && item.body && item.body.check === check && item.body.attempt === attempt) out.add(item.body.index);
  }
  return out;
}

function currentCard() {
  return root().firstElementChild;
}

function mark(attrs) {
  const card = currentCard();
  if (card) for (const [k, v] of Object.entries(attrs)) card.dataset[k] = String(v);
}

function clicked(button) {
  return new Promise((resolve) => button.addEventListener("click", resolve, { once: true }));
}

// A decoded AudioBuffer; a loading screen appears only if it takes a moment.
async function load(runner, url) {
  const slow = setTimeout(() => screen("loading", el("p", {}, "Loading…")), 150);
  try {
    return await runner.loader.get(url);
  } finally {
    clearTimeout(slow);
  }
}

// Run the check until the server has decided (or no longer needs it); returns the final status
// ("passed", "failed" or "not_required"). The runner then reloads its state: a participant who
// failed is screened out and sees the ended screen.
export async function runHeadphoneCheck(runner) {
  let st = await fetchState(runner);
  let introduced = false;
  let lastPart = null;
  let stalls = 0;
  while (st.status === "pending" && st.check) {
    const done = new Set([...st.answered, ...queued(runner, st.check, st.attempt)]);
    const todo = st.trials.filter((t) => !done.has(t.index));
    if (todo.length) {
      runner.loader.prefetch([st.calibration, ...todo.slice(0, 2).map((t) => t.media)]);
      if (!introduced) {
        await introduction(runner);
        await calibrate(runner, st);
        introduced = true;
      }
      const part = `${st.check}/${st.attempt}`;
      if (part !== lastPart) {
        await instructions(st, todo.length < st.trials.length);
        lastPart = part;
      }
      for (let k = 0; k < todo.length; k += 1) {
        runner.loader.prefetch(todo.slice(k + 1, k + 3).map((t) => t.media));
        await runTrial(runner, st, todo[k], st.trials.length - todo.length + k);
      }
    }
    // The part is over: wait until every answer is stored, then let the server decide.
    screen("headphone-saving", el("h1", {}, "Saving…"), el("p", {}, "Please wait while your answers are saved."));
    await runner.outbox.drain();
    const before = `${st.check}/${st.attempt}/${st.answered.length}`;
    st = await fetchState(runner);
    // An answer refused for good is asked again; if nothing ever moves, give up (the runner shows an error).
    stalls = before === `${st.check}/${st.attempt}/${st.answered.length}` ? stalls + 1 : 0;
    if (stalls >= 3) throw new Error("the headphone check is not progressing");
  }
  return st.status;
}

async function introduction(runner) {
  await message("headphone-intro", {
    title: "Headphone check",
    text: "This study needs headphones. Please put on your headphones now (left and right the right way round) and sit somewhere quiet. First you will set the volume, then a short listening test checks that headphones are used.",
    button: "Continue",
  });
  await runner.engine.unlock();
}

async function calibrate(runner, st) {
  const buffer = await load(runner, st.calibration);
  const play = el("button", { type: "button", class: "primary", "data-action": "play-calibration", autofocus: true }, "▶ Play noise");
  const next = el("button", { type: "button", "data-action": "continue", disabled: true }, "Continue");
  const note = el("p", { class: "hint" }, "Play the noise at least once before continuing.");
  const card = screen(
    "headphone-calibration",
    el("h1", {}, "Set the volume"),
    el("p", {}, "Press the button to play a noise. Set your computer's volume so that the noise is clearly audible but comfortable. You can play it as often as you like. Please do not change the volume after this step."),
    el("div", { class: "actions" }, play, next),
    note,
  );
  let plays = 0;
  card.dataset.plays = "0";
  play.addEventListener("click", async () => {
    if (play.disabled) return;
    play.disabled = true;
    play.textContent = "Playing…";
    await runner.engine.unlock();
    await runner.engine.play(buffer);
    plays += 1;
    card.dataset.plays = String(plays);
    play.disabled = false;
    play.textContent = "▶ Play again";
    next.disabled = false;
    note.textContent = "Adjust the volume if needed, then continue.";
  });
  await clicked(next);
}

function instructions(st, resumed) {
  const task = TASKS[st.check];
  const retry =
    st.attempt > 1
      ? el("p", { class: "notice", "data-retry": "true" }, "That did not work out. You have one more try. Make sure you are wearing headphones, not using loudspeakers, and that you are in a quiet place.")
      : null;
  const shown = message("headphone-instructions", {
    title: task.title,
    text: `${task.intro} There are ${st.trials.length} trials. Each sound plays only once, so listen carefully; you can answer when it has finished.`,
    extra: retry,
    button: resumed ? "Continue" : "Start",
  });
  mark({ check: st.check, attempt: st.attempt });
  return shown;
}

async function runTrial(runner, st, t, position) {
  const task = TASKS[st.check];
  const buffer = await load(runner, t.media);
  const play = el("button", { type: "button", class: "primary play", "data-action": "play", autofocus: true }, "▶ Play sounds");
  const note = el("p", { class: "hint" }, "The sounds play once. Listen carefully.");
  const choices = ORDINALS.map((name, i) =>
    el("button", { type: "button", class: "choice", "data-choice": String(i + 1), "aria-label": `${name} sound`, disabled: true }, el("span", {}, String(i + 1))),
  );
  const grid = el("div", { class: "response-grid", role: "group", "aria-label": task.question, style: "grid-template-columns: repeat(3, minmax(0, 1fr))" }, ...choices);
  const header = el("div", { class: "trial-header" }, progressBar(position, st.trials.length), el("div", { class: "phase-label" }, `Headphone check: ${position + 1} of ${st.trials.length}`));
  const card = screen("headphone-trial", header, play, note, el("p", {}, task.question), grid);
  Object.assign(card.dataset, { check: st.check, attempt: String(st.attempt), trial: String(t.index) });

  await clicked(play);
  await runner.engine.unlock();
  play.disabled = true;
  play.textContent = "Playing…";
  const events = [];
  runner.trialEvents = events; // the runner adds blur/focus/visibility events here
  runner.report({ kind: "headphone_play", detail: `${st.check}/${st.attempt}/${t.index}` });
  events.push({ type: "play", t: performance.now() });
  const started = performance.now();
  let frame = 0;
  // Show which of the three sounds is playing, so answers map onto what was heard.
  const tick = () => {
    const ms = performance.now() - started;
    choices.forEach((b, i) => {
      const [a, z] = st.intervals_ms[i] || [0, 0];
      const on = ms >= a && ms < z;
      b.dataset.playing = on ? "true" : "false";
      b.style.outline = on ? PLAYING_OUTLINE : "";
    });
    frame = requestAnimationFrame(tick);
  };
  frame = requestAnimationFrame(tick);
  const r = await runner.engine.play(buffer);
  cancelAnimationFrame(frame);
  for (const b of choices) {
    b.dataset.playing = "false";
    b.style.outline = "";
    b.disabled = false;
  }
  events.push({ type: "ended", t: r.endedPerf, detail: `audio_ms=${r.audio_ms};expected_ms=${r.expected_ms};channels=${buffer.numberOfChannels}` });
  play.textContent = "Played";
  note.textContent = "Now choose your answer.";
  choices[0].focus({ preventScroll: true });

  const { answer, time } = await new Promise((resolve) =>
    choices.forEach((b, i) => b.addEventListener("click", () => resolve({ answer: i + 1, time: performance.now() }), { once: true })),
  );
  for (const b of choices) b.disabled = true;
  choices[answer - 1].classList.add("chosen");
  runner.trialEvents = null;
  const body = {
    check: st.check,
    attempt: st.attempt,
    index: t.index,
    answer,
    rt_ms: Math.round((time - r.endedPerf) * 100) / 100,
    events: events.slice(0, 200),
  };
  runner.outbox.add(ANSWERS, body).catch((err) => {
    if (err instanceof HttpError && err.status === 409) runner.report({ kind: "conflict", detail: `headphone ${st.check}/${st.attempt}/${t.index}: ${err.message}`.slice(0, 480) });
  });
}
