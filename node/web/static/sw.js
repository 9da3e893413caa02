// Service worker of the web client, served from /sw.js so that its scope is the whole site.
// It does one thing: show a notification for a Web Push from the node, and bring the chat up
// when the notification is clicked. It caches nothing (the page always comes from the node).
//
// The payload is JSON naming the chat and the sender; the text is there only when the node is
// configured to include it. Field names accepted (the first present wins):
//   chat:   chat_id;  chat title: chat_title | title (group chats)
//   sender: sender_name | sender_username | sender;   text: text | body

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

function pick(obj, ...names) {
  for (const name of names) {
    const value = obj[name];
    if (typeof value === 'string' && value) return value;
    if (value && typeof value === 'object' && typeof value.username === 'string') return value.username;
  }
  return '';
}

function describe(data) {
  const chatId = data.chat_id != null ? String(data.chat_id) : (data.chat && data.chat.id != null ? String(data.chat.id) : '');
  const chatTitle = pick(data, 'chat_title', 'title') || (data.chat && pick(data.chat, 'title'));
  const sender = pick(data, 'sender_name', 'sender_username', 'sender');
  const text = pick(data, 'text', 'body');
  const count = Number(data.count) > 1 ? Number(data.count) : 0;
  const title = chatTitle ? (sender ? `${sender} in ${chatTitle}` : chatTitle) : sender || 'New message';
  const body = text || (count ? `${count} new messages` : 'New message');
  return { title, body, chatId };
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
