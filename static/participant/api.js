// API client and the localStorage outbox.
//
// Every answer is put in the outbox *before* it is sent, so nothing is lost when the network
// drops, the server restarts or the participant reloads. The outbox sends items one at a time,
// in order, retrying with exponential backoff; an item leaves the outbox only once the server
// has confirmed it (201 saved, or 200 identical retry). The runner never redirects to the
// recruitment site until the outbox is empty.

export class HttpError extends Error {
  constructor(status, data) {
    super((data && data.detail) || `HTTP ${status}`);
    this.status = status;
    this.data = data;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  // One request. Throws HttpError for HTTP errors and TypeError for network failures.
  async request(method, path, body) {
    const init = {
      method,
      headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json" },
      cache: "no-store",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) throw new HttpError(res.status, data);
    return { status: res.status, data };
  }

  // Retry a request until it gets an HTTP answer (network errors and 5xx/429 are retried).
  async persistent(method, path, body, onWait) {
    let attempt = 0;
    for (;;) {
      try {
        return await this.request(method, path, body);
      } catch (err) {
        if (!isRetryable(err)) throw err;
        attempt += 1;
        if (onWait) onWait(attempt, err);
        await sleep(backoff(attempt));
      }
    }
  }
}

export function isRetryable(err) {
  if (!(err instanceof HttpError)) return true; // fetch() threw: offline, DNS, connection reset
  return err.status >= 500 || err.status === 429 || err.status === 408;
}

export function backoff(attempt) {
  const base = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5));
  return base / 2 + Math.random() * (base / 2);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const a = new Uint8Array(16);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  constructor(api, storageKey) {
    this.api = api;
    this.key = storageKey;
    this.running = false;
    this.waiters = new Map(); // item id -> {resolve, reject}
    this.drainWaiters = [];
    this.listeners = [];
    this.failures = 0;
    this.wake = null;
    window.addEventListener("online", () => this.poke());
  }

  items() {
    try {
      const raw = localStorage.getItem(this.key);
      return raw ? JSON.parse(raw) : [];
    } catch (_) {
      return [];
    }
  }

  _write(items) {
    try {
      if (items.length) localStorage.setItem(this.key, JSON.stringify(items));
      else localStorage.removeItem(this.key);
    } catch (err) {
      // Storage full or disabled: keep going in memory; the send loop still delivers.
      console.warn("outbox: localStorage unavailable", err);
      this.memory = items;
    }
  }

  // Queue a POST; returns a promise of the server's answer for that item.
  add(path, body) {
    const item = { id: uuid(), path, body, queuedAt: Date.now() };
    const items = this.items();
    items.push(item);
    this._write(items);
    const done = new Promise((resolve, reject) => this.waiters.set(item.id, { resolve, reject }));
    this._notify();
    this.poke();
    return done;
  }

  pending() {
    return this.items();
  }

  size() {
    return this.items().length;
  }

  onChange(fn) {
    this.listeners.push(fn);
  }

  _notify() {
    const state = { pending: this.size(), failures: this.failures, online: navigator.onLine };
    for (const fn of this.listeners) fn(state);
  }

  // Resolves when every queued item has been confirmed by the server.
  drain() {
    if (this.size() === 0) return Promise.resolve();
    this.poke();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  poke() {
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w();
    }
    if (!this.running) this._run();
  }

  _remove(id) {
    this._write(this.items().filter((x) => x.id !== id));
  }

  async _run() {
    this.running = true;
    try {
      for (;;) {
        const items = this.items();
        if (!items.length) break;
        const item = items[0];
        try {
          const res = await this.api.request("POST", item.path, item.body);
          this._remove(item.id);
          this.failures = 0;
          this._settle(item.id, res.data, null);
        } catch (err) {
          if (err instanceof HttpError && !isRetryable(err) && err.status !== 401) {
            // The server refused this item for good (e.g. 409: a different answer is already
            // stored). Keeping it would block every later answer, so drop it and tell the caller.
            this._remove(item.id);
            this._settle(item.id, null, err);
            this._rejected(item, err);
          } else {
            this.failures += 1;
            this._notify();
            await new Promise((resolve) => {
              this.wake = resolve;
              setTimeout(resolve, backoff(this.failures));
            });
            this.wake = null;
          }
        }
        this._notify();
      }
    } finally {
      this.running = false;
    }
    this._notify();
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  _settle(id, data, err) {
    const w = this.waiters.get(id);
    if (!w) return;
    this.waiters.delete(id);
    if (err) w.reject(err);
    else w.resolve(data);
  }

  _rejected(item, err) {
    console.warn("outbox: server refused", item.path, err.status, err.message);
    try {
      const key = `${this.key}:refused`;
      const list = JSON.parse(localStorage.getItem(key) || "[]");
      list.push({ path: item.path, body: item.body, status: err.status, detail: err.message, at: Date.now() });
      localStorage.setItem(key, JSON.stringify(list.slice(-50)));
    } catch (_) {
      /* best effort */
    }
  }
}
