// Trial presentation: frame-locked image sequences and play-once audio.
//
// Image trials switch fixation → image → mask on requestAnimationFrame callbacks. A phase ends on
// the first frame at which its elapsed time reaches the target minus half a frame, so durations
// are rounded to whole frames. The *measured* duration of each phase (the difference between the
// rAF timestamps of the frames that started and ended it) is returned for the record.

import { el } from "./ui.js";

export function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(resolve));
}

// Median interval between display frames (ms), measured over `n` frames.
export async function measureFrameInterval(n = 30) {
  const stamps = [];
  for (let i = 0; i <= n; i += 1) stamps.push(await nextFrame());
  const d = stamps.slice(1).map((t, i) => t - stamps[i]).sort((a, b) => a - b);
  return d[Math.floor(d.length / 2)] || 16.7;
}

// A static noise mask the size of the stimulus, drawn once per trial before the sequence starts.
export function makeMask(size, seed) {
  const cells = 32;
  const canvas = el("canvas", { class: "mask", width: cells, height: cells });
  const ctx = canvas.getContext("2d");
  const data = ctx.createImageData(cells, cells);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < data.data.length; i += 4) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const v = s & 255;
    data.data[i] = data.data[i + 1] = data.data[i + 2] = v;
    data.data[i + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
  canvas.style.width = canvas.style.height = `${size}px`;
  return canvas;
}

// Present one image trial in `stage` (an element holding fixation, image and mask layers).
// Returns {durations, shownAt, onset} where onset is the performance.now() time the response
// screen appeared and shownAt the wall-clock time the image appeared.
export async function presentImage(stage, img, mask, timing, frameMs) {
  const fixation = el("div", { class: "fixation", "aria-hidden": "true" }, "+");
  img.classList.add("stimulus");
  stage.replaceChildren(fixation, img, mask);
  const layers = { fixation, stimulus: img, mask };
  const show = (name) => {
    for (const [k, node] of Object.entries(layers)) node.style.visibility = k === name ? "visible" : "hidden";
  };
  show(null);
  const phases = [
    ["fixation", timing.fixation_ms],
    ["stimulus", timing.stimulus_ms],
    ["mask", timing.mask_ms],
  ].filter(([, ms]) => ms > 0);
  const durations = {};
  const frames = {};
  // Start on a steady frame: let the new screen's first layout and paint pass, then wait (at most
  // 10 frames) until two successive frame intervals are each under 1.5 frames, so a hiccup of the
  // page's start-up does not fall inside the stimulus.
  let last = await nextFrame();
  for (let i = 0, steady = 0; i < 10 && steady < 2; i += 1) {
    const ts = await nextFrame();
    steady = ts - last < 1.5 * frameMs ? steady + 1 : 0;
    last = ts;
  }
  let shownAt = null;
  let start = await nextFrame();
  show(phases[0][0]);
  if (phases[0][0] === "stimulus") shownAt = Date.now();
  let i = 0;
  let count = 0;
  while (i < phases.length) {
    const ts = await nextFrame();
    count += 1;
    const [name, target] = phases[i];
    if (ts - start >= target - frameMs / 2) {
      durations[`${name}_ms`] = Math.round((ts - start) * 100) / 100;
      frames[`${name}_frames`] = count;
      i += 1;
      count = 0;
      start = ts;
      if (i < phases.length) {
        show(phases[i][0]);
        if (phases[i][0] === "stimulus") shownAt = Date.now();
      } else {
        show(null);
      }
    }
  }
  return { durations, frames, shownAt, onset: start };
}

// Web Audio playback. The context is created on demand and unlocked on the first user gesture
// (Safari and Firefox need one); each clip is decoded before its trial can start.
export class AudioEngine {
  constructor() {
    this.ctx = null;
  }

  context() {
    if (!this.ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      this.ctx = new Ctx();
    }
    return this.ctx;
  }

  // Call from a click/keydown handler.
  async unlock() {
    const ctx = this.context();
    if (ctx.state !== "running") {
      try {
        await ctx.resume();
      } catch (_) {
        /* retried on the next gesture */
      }
    }
    // A silent buffer played inside the gesture unlocks iOS/Safari.
    const b = ctx.createBuffer(1, 1, 22050);
    const src = ctx.createBufferSource();
    src.buffer = b;
    src.connect(ctx.destination);
    src.start(0);
    return ctx.state === "running";
  }

  get running() {
    return !!this.ctx && this.ctx.state === "running";
  }

  decode(buf) {
    const ctx = this.context();
    return new Promise((resolve, reject) => {
      const p = ctx.decodeAudioData(buf, resolve, reject);
      if (p && p.then) p.then(resolve, reject);
    });
  }

  // Play a buffer once; resolves with measured times when playback has ended.
  play(buffer) {
    const ctx = this.context();
    return new Promise((resolve) => {
      const src = ctx.createBufferSource();
      src.buffer = buffer;
      src.connect(ctx.destination);
      const startedPerf = performance.now();
      const startedCtx = ctx.currentTime;
      const shownAt = Date.now();
      src.onended = () => {
        resolve({
          shownAt,
          startedPerf,
          endedPerf: performance.now(),
          audio_ms: Math.round((ctx.currentTime - startedCtx) * 100000) / 100,
          expected_ms: Math.round(buffer.duration * 100000) / 100,
        });
      };
      src.start();
    });
  }
}
