// Push opt-in: the service worker at /sw.js (scope /), the node's VAPID key, the browser's
// PushManager subscription, and its registration on the node. All of it is optional: a browser
// without push, or a node without the push back end (404), just hides the option.

const KEY = (userId) => `mn.push.${userId}`;

function keyBytes(base64url) {
  const padded = base64url.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (base64url.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

export function registerWorker() {
  if (!('serviceWorker' in navigator)) return null;
  return navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => null);
}

export class PushClient {
  constructor(api, userId) {
    this.api = api;
    this.userId = userId;
    this.publicKey = null;
  }

  get browserSupports() {
    return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
  }

  /** Whether push can be offered here (the browser can, and the node has a key). */
  async probe() {
    if (!this.browserSupports) return false;
    try {
      const response = await this.api.raw('GET', '/api/v1/push/vapid-public-key');
      if (!response.ok) return false;
      this.publicKey = (await response.json()).public_key;
      return Boolean(this.publicKey);
    } catch {
      return false;
    }
  }

  get enabled() {
    return this.browserSupports && Boolean(localStorage.getItem(KEY(this.userId))) && Notification.permission === 'granted';
  }

  async enable() {
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') throw new Error('Notifications are blocked for this site.');
    const registration = await navigator.serviceWorker.ready;
    const subscription =
      (await registration.pushManager.getSubscription()) ||
      (await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: keyBytes(this.publicKey),
      }));
    const json = subscription.toJSON();
    const body = { endpoint: json.endpoint, keys: { p256dh: json.keys.p256dh, auth: json.keys.auth } };
    const answer = await this.api.post('/api/v1/push/subscriptions', body);
    localStorage.setItem(KEY(this.userId), JSON.stringify({ id: answer.id, endpoint: json.endpoint }));
  }

  /** Stop pushes to this browser: on the node, then in the browser (both best effort). */
  async disable() {
    const saved = JSON.parse(localStorage.getItem(KEY(this.userId)) || 'null');
    localStorage.removeItem(KEY(this.userId));
    if (saved) {
      await this.api.request('DELETE', `/api/v1/push/subscriptions/${encodeURIComponent(saved.id)}`).catch(() => {});
    }
    if ('serviceWorker' in navigator) {
      const registration = await navigator.serviceWorker.getRegistration('/');
      const subscription = registration && (await registration.pushManager.getSubscription());
      if (subscription) await subscription.unsubscribe().catch(() => {});
    }
  }
}
