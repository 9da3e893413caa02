// The signed-in session: tokens in localStorage (shared by the tabs of this browser), the access
// token refreshed quietly before it expires and whenever the node answers 401, and a device id
// per browser.
//
// Refresh tokens rotate: presenting a spent one revokes the whole family. Two tabs refreshing at
// once would do exactly that, so a refresh runs under a Web Lock shared by the tabs, and inside
// it first looks whether another tab has refreshed already.

import { postJson, ApiError } from './api.js';
import { randomId } from './format.js';

const TOKENS = 'mn.tokens';
const DEVICE = 'mn.device';
const EARLY = 60_000; // refresh this long before expiry (at most a quarter of the lifetime)
const HOUR = 3_600_000;

function now() {
  return Date.now();
}

export class Session extends EventTarget {
  constructor() {
    super();
    this._timer = null;
    this._inflight = null;
    window.addEventListener('storage', (e) => {
      if (e.key !== TOKENS) return;
      if (!e.newValue) this._ended('elsewhere');
      else this._schedule();
    });
  }

  get tokens() {
    try {
      return JSON.parse(localStorage.getItem(TOKENS));
    } catch {
      return null;
    }
  }

  get signedIn() {
    return Boolean(this.tokens && this.tokens.refresh_token);
  }

  _store(tokens) {
    const lifetime = tokens.expires_in * 1000;
    const saved = {
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      expires_at: now() + lifetime,
      lead: Math.min(EARLY, lifetime / 4),
    };
    localStorage.setItem(TOKENS, JSON.stringify(saved));
    this._schedule();
    return saved;
  }

  _schedule() {
    clearTimeout(this._timer);
    const t = this.tokens;
    if (!t) return;
    const due = t.expires_at - t.lead - now();
    // at most an hour at a time: setTimeout overflows past ~24.8 days, and a sleeping laptop
    // wakes up late anyway
    this._timer = setTimeout(() => {
      if (due > HOUR) this._schedule();
      else this.refresh(t.access_token).catch(() => {});
    }, Math.max(0, Math.min(due, HOUR)));
  }

  start() {
    if (this.signedIn) this._schedule();
  }

  async signIn(username, password) {
    this._store(await postJson('/api/v1/auth/login', { username, password }));
    this.dispatchEvent(new Event('signedin'));
  }

  async signUp(username, password) {
    await postJson('/api/v1/auth/register', { username, password });
    await this.signIn(username, password);
  }

  /**
   * End the session here and on the node. The node is told first (the page may navigate away as
   * soon as `signedout` is dispatched); the tokens are dropped here whatever it answers.
   */
  async signOut(reason = 'user') {
    if (reason === 'user' && this.tokens) {
      const token = await this.freshToken().catch(() => this.tokens?.access_token); // logout needs one
      const t = this.tokens;
      if (t) {
        await postJson('/api/v1/auth/logout', { refresh_token: t.refresh_token }, { keepalive: true, token })
          .catch(() => {});
      }
    }
    localStorage.removeItem(TOKENS);
    this._ended(reason);
  }

  _ended(reason) {
    clearTimeout(this._timer);
    this.dispatchEvent(new CustomEvent('signedout', { detail: reason }));
  }

  /** An access token valid for at least a little while, refreshing first if needed. */
  async freshToken() {
    const t = this.tokens;
    if (!t) throw new ApiError(401, 'signed_out', 'Signed out.');
    if (t.expires_at - now() > Math.min(10_000, t.lead)) return t.access_token;
    return this.refresh(t.access_token);
  }

  /**
   * A new access token in place of `stale`. One refresh at a time per browser; a tab that finds
   * the stored token already replaced uses that one. A refused refresh signs out; a network
   * failure does not (the caller retries later).
   */
  refresh(stale) {
    if (!this._inflight) {
      const run = () => this._refresh(stale);
      const locked = navigator.locks ? navigator.locks.request('mn.refresh', run) : run();
      this._inflight = locked.finally(() => {
        this._inflight = null;
      });
    }
    return this._inflight;
  }

  async _refresh(stale) {
    const t = this.tokens;
    if (!t) throw new ApiError(401, 'signed_out', 'Signed out.');
    if (t.access_token !== stale && t.expires_at - now() > Math.min(10_000, t.lead)) {
      this._schedule();
      return t.access_token; // another tab refreshed meanwhile
    }
    try {
      return this._store(await postJson('/api/v1/auth/refresh', { refresh_token: t.refresh_token }))
        .access_token;
    } catch (err) {
      if (err.status === 401) this.signOut('expired');
      else this._timer = setTimeout(() => this.refresh(stale).catch(() => {}), 5_000);
      throw err;
    }
  }
}

/** This browser's stable device id (one per browser profile, kept in localStorage). */
export function browserDeviceId() {
  let id = localStorage.getItem(DEVICE);
  if (!id || !/^[A-Za-z0-9_.:-]{1,40}$/.test(id)) {
    id = `web-${randomId().slice(0, 16)}`;
    localStorage.setItem(DEVICE, id);
  }
  return id;
}

/**
 * The device id for this tab. The node closes an older socket of the same device, so two tabs
 * must not share one: the first tab holds a Web Lock on the browser's id (kept across reloads),
 * a second one takes a numbered slot. Without Web Locks every tab uses the browser's id.
 */
export async function claimDeviceId() {
  const base = browserDeviceId();
  if (!navigator.locks) return base;
  const hold = (name, options) =>
    new Promise((resolve, reject) => {
      navigator.locks
        .request(name, options, (lock) => {
          resolve(Boolean(lock));
          return lock ? new Promise(() => {}) : undefined; // held until the page goes away
        })
        .catch(reject);
    });
  if (await hold(`mn.device.${base}`, { ifAvailable: true })) return base;
  // A reload may briefly overlap the page it replaces: wait a moment for the main slot.
  try {
    if (await hold(`mn.device.${base}`, { signal: AbortSignal.timeout(1500) })) return base;
  } catch {
    // timed out: another tab really has it
  }
  for (let slot = 1; slot < 32; slot += 1) {
    if (await hold(`mn.device.${base}.${slot}`, { ifAvailable: true })) return `${base}-${slot}`;
  }
  return `${base}-${randomId().slice(0, 8)}`;
}
