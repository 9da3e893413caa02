// Service worker of the web client, served from /sw.js so that its scope is the whole site.
// It does one thing: show a notification for a Web Push from the node, and bring the chat up
// when the notification is clicked. It caches nothing (the page always comes from the node).
//
// The payload is exactly what the node sends (node/push/payload.py, docs/PROTOCOL.md "Web Push"):
//   {"type": "message", "chat_id": "7", "chat_kind": "direct" | "group", "chat_title": null | "…",
//    "message_id": "99", "seq": 12, "sender": {"id": "3", "username": "alice"},
//    "text": "…", "text_truncated": true}
// `text` only when the node is configured to include it; `text_truncated` only when it was cut.
// A push that is not such a message still shows a notification (browsers require one per push).

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

const GENERIC = { title: 'New message', body: '', chatId: '' };

function text(value) {
  return typeof value === 'string' ? value : '';
}

function describe(data) {
  if (!data || data.type !== 'message' || typeof data.chat_id !== 'string') return GENERIC;
  const sender = text(data.sender && data.sender.username);
  const chatTitle = data.chat_kind === 'group' ? text(data.chat_title) : '';
  const title = chatTitle ? (sender ? `${sender} in ${chatTitle}` : chatTitle) : sender || 'New message';
  const said = text(data.text);
  const body = said ? (data.text_truncated === true ? `${said}…` : said) : 'New message';
  return { title, body, chatId: data.chat_id };
}

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  const { title, body, chatId } = describe(data);
  const url = chatId ? `/#/chat/${encodeURIComponent(chatId)}` : '/';
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      tag: chatId ? `chat-${chatId}` : 'messenger',
      renotify: true,
      icon: '/static/icon-192.png',
      badge: '/static/icon-192.png',
      data: { url, chatId },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const { url, chatId } = event.notification.data || {};
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      for (const client of windows) {
        if (new URL(client.url).origin !== self.location.origin) continue;
        await client.focus();
        client.postMessage({ type: 'open-chat', chat_id: chatId });
        return;
      }
      await self.clients.openWindow(url || '/');
    })(),
  );
});
