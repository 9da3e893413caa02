// The WebSocket: connects with a fresh token, reconnects with capped, jittered back-off, notices a
// dead connection by its own pings, and follows the browser's online/offline events (offline
// closes at once; online reconnects at once).
//
// States: 'connecting' → 'open' (after the node's `ready` frame) → 'down' (waiting to retry) …;
// 'offline' while the browser says so; 'replaced' when this device connected again elsewhere;
// 'stopped' after sign-out.

const PING_EVERY = 25_000;
const PONG_WITHIN = 10_000;
const BACKOFF_MIN = 500;
const BACKOFF_MAX = 15_000;
const REPLACED = 4001; // the node's close code: the same device connected again

export class Socket extends EventTarget {
  constructor({ session, deviceId, probe }) {
    super();
    this.session = session;
    this.deviceId = deviceId;
    this.probe = probe; // called when a connection failed before `ready` (a refused token?)
    this.state = 'down';
    this.retryAt = 0;
    this._ws = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._onOnline = () => this.reconnectNow();
    this._onOffline = () => this._goOffline();
    this._onVisible = () => {
      if (document.visibilityState === 'visible' && this.state === 'down') this.reconnectNow();
    };
  }

  start() {
    window.addEventListener('online', this._onOnline);
    window.addEventListener('offline', this._onOffline);
    document.addEventListener('visibilitychange', this._onVisible);
    this._connect();
  }

  stop() {
    window.removeEventListener('online', this._onOnline);
    window.removeEventListener('offline', this._onOffline);
    document.removeEventListener('visibilitychange', this._onVisible);
    this._setState('stopped');
    this._teardown();
  }

  /** Send a frame if the connection is ready; false otherwise (the caller keeps it). */
  send(frame) {
    if (this.state !== 'open') return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  reconnectNow() {
    if (this.state === 'stopped' || this.state === 'open' || this.state === 'connecting') return;
    this._attempt = 0;
    this._connect();
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  _teardown() {
    clearTimeout(this._retryTimer);
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState <= WebSocket.OPEN) ws.close(1000);
    }
  }

  _goOffline() {
    if (this.state === 'stopped') return;
    this._teardown();
    this._setState('offline');
  }

  async _connect() {
    this._teardown();
    if (!navigator.onLine) {
      this._setState('offline');
      return;
    }
    this._setState('connecting');
    let token;
    try {
      token = await this.session.freshToken();
    } catch (err) {
      if (err.status === 401) return; // signed out: the app stops this socket
      this._retryLater();
      return;
    }
    if (this.state !== 'connecting') return; // stopped or went offline meanwhile
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = new URLSearchParams({ device_id: this.deviceId, token });
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/ws?${query}`);
    this._ws = ws;
    let ready = false;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._alive();
      if (frame.type === 'ready') {
        ready = true;
        this._attempt = 0;
        this._setState('open');
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      clearInterval(this._pingTimer);
      clearTimeout(this._pongTimer);
      if (event.code === REPLACED) {
        this._setState('replaced');
        return;
      }
      if (!ready && this.probe) this.probe(); // refreshes, or signs out, if the token was refused
      this._retryLater();
    };
    this._pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send('{"type":"ping"}');
      clearTimeout(this._pongTimer);
      this._pongTimer = setTimeout(() => ws.close(1000), PONG_WITHIN);
    }, PING_EVERY);
  }

  _alive() {
    clearTimeout(this._pongTimer); // any frame proves the connection lives
  }

  _retryLater() {
    if (this.state === 'stopped' || this.state === 'offline') return;
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this._attempt);
    const delay = Math.round(base * (0.7 + Math.random() * 0.6));
    this._attempt += 1;
    this.retryAt = Date.now() + delay;
    this._setState('down');
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }
}
