// Preloading of stimulus media, with retries. A trial never starts on media that is not fully
// loaded and decoded: images are decoded into <img> elements, audio into AudioBuffers. A load
// that keeps failing is reported to the server (never skipped silently) and retried until it works.

import { backoff, sleep } from "./api.js";

export class MediaLoader {
  // decodeAudio: async (ArrayBuffer) => AudioBuffer, or null for image experiments.
  constructor({ decodeAudio = null, report = () => {}, onTrouble = () => {} } = {}) {
    this.decodeAudio = decodeAudio;
    this.report = report;
    this.onTrouble = onTrouble;
    this.cache = new Map(); // url -> Promise of decoded media
  }

  get(url) {
    if (!this.cache.has(url)) {
      const p = this._load(url);
      this.cache.set(url, p);
    }
    return this.cache.get(url);
  }

  // Start loading these URLs in the background.
  prefetch(urls) {
    for (const u of urls) this.get(u).catch(() => {});
  }

  forget(url) {
    this.cache.delete(url);
  }

  async _load(url) {
    let attempt = 0;
    let reported = false;
    for (;;) {
      try {
        const res = await fetch(url, { cache: "force-cache" });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const buf = await res.arrayBuffer();
        const decoded = this.decodeAudio ? await this.decodeAudio(buf) : await decodeImage(buf, res.headers.get("content-type"));
        if (attempt > 0) this.onTrouble(null);
        return decoded;
      } catch (err) {
        attempt += 1;
        if (attempt >= 3 && !reported) {
          reported = true;
          this.report({ kind: "media_error", detail: `${url}: ${err && err.message ? err.message : err}`.slice(0, 480) });
        }
        if (attempt >= 2) this.onTrouble(url);
        await sleep(backoff(attempt));
      }
    }
  }
}

async function decodeImage(buf, type) {
  const blob = new Blob([buf], { type: type || "image/png" });
  const img = new Image();
  img.src = URL.createObjectURL(blob);
  await img.decode();
  return img;
}
