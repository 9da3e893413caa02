// The web client's controller: starts the session, loads chats over REST, handles the WebSocket's
// frames, and keeps the views in step with the store.
//
// Delivery rules the client keeps (see PROTOCOL.md, WebSocket):
//  - every `message` frame is recorded once per (chat_id, seq) and then acked, so the node never
//    sends it to this device again; a repeat after a reconnect is dropped by the store;
//  - a `gap` frame is filled by reading that range over REST;
//  - sends carry a client_msg_id and stay in a persisted outbox until the node confirms them;
//    after any reconnect the outbox is sent again (the node dedupes by client_msg_id);
//  - on every `ready` the chat list and the open chat are brought up to date over REST.

import { Api } from './api.js';
import { $ } from './dom.js';
import { randomId } from './format.js';
import { MediaClient } from './media.js';
import { PushClient, registerWorker } from './push.js';
import { Session, claimDeviceId } from './session.js';
import { Socket } from './socket.js';
import { Store } from './store.js';
import { AuthView } from './views/auth.js';
import { renderChatList } from './views/chatlist.js';
import { Conversation, fillAvatar } from './views/conversation.js';
import { NewChatDialog } from './views/newchat.js';

const PAGE = 50;
const RANGE_PAGE = 200;
const TYPING_EVERY = 3_000; // send at most one typing frame per chat this often
const TYPING_SHOWN = 5_000; // show someone as typing this long after their last frame
const ACK_DELAY = 150;
const PARALLEL = 4;
const PRESENCE_QUERY_MAX = 200; // the node answers at most this many ids per presence_query

/** Run `fn` over `items`, at most PARALLEL at once. */
async function eachLimited(items, fn) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(PARALLEL, queue.length) }, async () => {
    while (queue.length) await fn(queue.shift()).catch(() => {});
  });
  await Promise.all(workers);
}

class App {
  constructor(session, me) {
    this.session = session;
    this.api = new Api(session);
    this.store = new Store(me);
    this.media = new MediaClient(this.api);
    this.push = new PushClient(this.api, me.id);
    this.activeId = null;
    this.filter = '';
    this.acks = new Map();
    this.ackTimer = null;
    this.unsentReads = new Map();
    this.lastTyping = new Map();
    this.typingTimer = null;
    this.chatFetches = new Map();
    this.userFetches = new Map();
    this.bannerTimer = null;
    this.everOpen = false;
    this.conversation = new Conversation(this);
    this.newChat = new NewChatDialog(this);
    this.socket = null;
  }

  isPhone() {
    return !matchMedia('(min-width: 768px)').matches;
  }

  async start() {
    const { me } = this.store;
    $('me-name').textContent = me.username;
    fillAvatar($('me-avatar'), me.id, me.username);
    this._bind();
    $('main-view').hidden = false;
    this.store.addEventListener('change', () => this.renderList());
    const deviceId = await claimDeviceId();
    this.socket = new Socket({ session: this.session, deviceId, probe: () => this.api.get('/api/v1/users/me').catch(() => {}) });
    this.socket.addEventListener('frame', (e) => this.onFrame(e.detail));
    this.socket.addEventListener('state', (e) => this.onSocketState(e.detail));
    this.onSocketState('connecting');
    await this.loadChats().catch(() => {});
    this.socket.start();
    this.route();
    this.conversation.showAttach(true);
    this.push.probe().then((ok) => this._showPush(ok));
  }

  _bind() {
    window.addEventListener('hashchange', () => this.route());
    $('chat-filter').addEventListener('input', (e) => {
      this.filter = e.target.value;
      this.renderList();
    });
    $('chat-filter').addEventListener('keydown', (e) => {
      if (e.key === 'ArrowDown') {
        e.preventDefault();
        $('chat-list').querySelector('a')?.focus();
      }
    });
    $('chat-list').addEventListener('click', (e) => {
      const link = e.target.closest('a[data-chat]');
      if (link && link.dataset.chat === this.activeId) {
        e.preventDefault(); // already open (no hashchange will come): just go to it
        this.openChat(this.activeId);
      }
    });
    $('chat-list').addEventListener('keydown', (e) => {
      const links = [...$('chat-list').querySelectorAll('a')];
      const i = links.indexOf(document.activeElement);
      if (i < 0) return;
      if (e.key === 'ArrowDown' && i < links.length - 1) {
        e.preventDefault();
        links[i + 1].focus();
      } else if (e.key === 'ArrowUp') {
        e.preventDefault();
        (i > 0 ? links[i - 1] : $('chat-filter')).focus();
      }
    });
    $('new-chat-btn').addEventListener('click', () => this.newChat.open());
    $('empty-new-chat').addEventListener('click', () => this.newChat.open());
    $('menu-btn').addEventListener('click', () => this._toggleMenu());
    $('menu').addEventListener('keydown', (e) => {
      const items = [...$('menu').querySelectorAll('[role=menuitem]:not([hidden])')];
      const i = items.indexOf(document.activeElement);
      if (e.key === 'Escape') {
        this._toggleMenu(false);
        $('menu-btn').focus();
      } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        const step = e.key === 'ArrowDown' ? 1 : -1;
        items[(i + step + items.length) % items.length]?.focus();
      }
    });
    document.addEventListener('click', (e) => {
      if (!$('menu').hidden && !e.target.closest('.menu-wrap')) this._toggleMenu(false);
    });
    $('signout-btn').addEventListener('click', () => this.signOut());
    $('push-btn').addEventListener('click', () => this._togglePush());
    $('banner-retry').addEventListener('click', () => this.socket.reconnectNow());
    document.addEventListener('visibilitychange', () => this.maybeRead());
    window.addEventListener('focus', () => this.maybeRead());
    if ('serviceWorker' in navigator) {
      navigator.serviceWorker.addEventListener('message', (e) => {
        if (e.data?.type === 'open-chat' && e.data.chat_id) location.hash = `#/chat/${e.data.chat_id}`;
      });
    }
  }

  // --- menu and push ------------------------------------------------------------------------------

  _toggleMenu(open = $('menu').hidden) {
    $('menu').hidden = !open;
    $('menu-btn').setAttribute('aria-expanded', String(open));
    if (open) $('menu').querySelector('[role=menuitem]:not([hidden])')?.focus();
  }

  _showPush(available) {
    $('push-btn').hidden = !available;
    $('push-label').textContent = this.push.enabled ? 'Turn off notifications' : 'Turn on notifications';
  }

  async _togglePush() {
    this._toggleMenu(false);
    try {
      if (this.push.enabled) await this.push.disable();
      else await this.push.enable();
    } catch (err) {
      this._flash(err.message || 'Notifications could not be turned on.');
    }
    this._showPush(true);
  }

  _flash(text) {
    $('banner-text').textContent = text;
    $('banner-retry').hidden = true;
    $('banner').hidden = false;
    clearTimeout(this.bannerTimer);
    this.bannerTimer = setTimeout(() => this.onSocketState(this.socket.state), 4000);
  }

  async signOut() {
    this._toggleMenu(false);
    if (this.push.enabled) await this.push.disable().catch(() => {});
    this.store.forget();
    await this.session.signOut('user');
  }

  // --- connection state ---------------------------------------------------------------------------

  onSocketState(state) {
    clearTimeout(this.bannerTimer);
    const banner = $('banner');
    const text = $('banner-text');
    const retry = $('banner-retry');
    const status = { open: 'Online', connecting: 'Connecting…', down: 'Reconnecting…', offline: 'Offline', replaced: 'Paused' };
    $('me-status').textContent = status[state] || '';
    $('me-status').classList.toggle('online', state === 'open');
    if (state === 'open') {
      this.everOpen = true;
      banner.hidden = true;
      document.body.classList.remove('disconnected');
      return;
    }
    const show = () => {
      document.body.classList.add('disconnected');
      retry.hidden = false;
      retry.textContent = 'Retry now';
      if (state === 'offline') {
        text.textContent = 'You are offline. Messages will be sent when you are back.';
        retry.hidden = true;
      } else if (state === 'replaced') {
        text.textContent = 'Messenger is open in another window.';
        retry.textContent = 'Use here';
      } else if (state === 'down') {
        const secs = Math.max(1, Math.ceil((this.socket.retryAt - Date.now()) / 1000));
        text.textContent = `Connection lost. Reconnecting in ${secs} s…`;
        this.bannerTimer = setTimeout(() => this.onSocketState(this.socket.state), 1000);
      } else {
        text.textContent = 'Connecting…';
        retry.hidden = true;
      }
      banner.hidden = false;
    };
    // the first connection gets a moment before "connecting" is worth a banner
    if (!this.everOpen && state === 'connecting') this.bannerTimer = setTimeout(show, 1500);
    else show();
  }

  // --- loading over REST --------------------------------------------------------------------------

  async loadChats() {
    const { items } = await this.api.get('/api/v1/chats');
    this.store.setChatList(items);
    if (this.activeId && !this.store.chats.has(this.activeId)) this.closeChat();
    const chats = [...this.store.chats.values()];
    await eachLimited(chats, (chat) => this._complete(chat));
  }

  /** Fill in what the list shows but the Chat summary lacks: members, the newest message. */
  async _complete(chat) {
    const tasks = [];
    if (!chat.members) tasks.push(this._fetchChat(chat.id));
    if (chat.last_seq > 0 && (!chat.last || chat.last.seq < chat.last_seq)) {
      tasks.push(
        this.api.get(`/api/v1/chats/${chat.id}/messages?limit=1`).then(({ items }) => {
          for (const m of items) this.store.addMessage(m);
        }),
      );
    }
    await Promise.all(tasks);
    this.renderList();
    if (chat.id === this.activeId) this.conversation.renderHead();
  }

  _fetchChat(id) {
    if (!this.chatFetches.has(id)) {
      const made = this.api.get(`/api/v1/chats/${id}`).then((chat) => {
        if (chat.members) this.store.rememberUsers(chat.members);
        return this.store.upsertChat(chat);
      });
      made.finally(() => this.chatFetches.delete(id)).catch(() => {});
      this.chatFetches.set(id, made);
    }
    return this.chatFetches.get(id);
  }

  async _ensureUser(id) {
    if (this.store.users.has(id)) return;
    if (!this.userFetches.has(id)) {
      this.userFetches.set(id, this.api.get(`/api/v1/users/${id}`).then((u) => this.store.rememberUsers([u])).catch(() => {}));
    }
    await this.userFetches.get(id);
    this.renderList();
    if (this.activeId) this.conversation.render();
  }

  /** A chat I just created (or was answered with): into the list, and open it. */
  async adoptChat(summary) {
    this.store.upsertChat(summary);
    if (summary.members) this.store.rememberUsers(summary.members);
    await this._complete(this.store.chats.get(summary.id));
    location.hash = `#/chat/${summary.id}`;
  }

  async refreshChat(id) {
    this.chatFetches.delete(id);
    await this._fetchChat(id).catch(() => {});
    this.renderList();
  }

  // --- frames -------------------------------------------------------------------------------------

  onFrame(frame) {
    switch (frame.type) {
      case 'ready':
        this.onReady();
        break;
      case 'message':
        this.onMessage(frame.message, true);
        break;
      case 'sent':
        this.onMessage(frame.message, false);
        break;
      case 'typing':
        this.store.setTyping(frame.chat_id, frame.user_id, Date.now() + TYPING_SHOWN);
        this._typingChanged();
        break;
      case 'read':
        this.onRead(frame);
        break;
      case 'presence':
        this.store.applyPresence(frame);
        this.renderList();
        this.conversation.renderHead();
        break;
      case 'error':
        this.onError(frame);
        break;
      case 'gap':
        this.fillRange(frame.chat_id, frame.after_seq, frame.before_seq).catch(() => {});
        break;
      default:
        break; // pong, and frames this client does not know
    }
  }

  async onReady() {
    this.store.resetPresence(); // the node sends who is online right after `ready`
    this.flushOutbox();
    for (const [chatId, seq] of this.unsentReads) this.socket.send({ type: 'read', chat_id: chatId, seq });
    this.unsentReads.clear();
    await this.loadChats().catch(() => {});
    const chat = this.activeId && this.store.chats.get(this.activeId);
    // presence was reset, and a query sent while the socket was down went nowhere: the open
    // group's is asked for again
    if (chat) this._askPresence(chat);
    if (chat && chat.history.loaded) {
      const top = this.store.contiguousTop(chat) ?? 0;
      await this.fillRange(chat.id, top, null).catch(() => {});
    }
  }

  async onMessage(message, viaSocket) {
    if (!this.store.chats.has(message.chat_id)) await this._fetchChat(message.chat_id).catch(() => {});
    const chat = this.store.chats.get(message.chat_id);
    if (viaSocket) this._ack(message.chat_id, message.seq);
    if (!chat) return;
    const fresh = this.store.addMessage(message);
    if (!this.store.users.has(message.sender_id)) this._ensureUser(message.sender_id);
    if (!chat.members) this._complete(chat);
    this.renderList();
    if (chat.id === this.activeId) {
      if (fresh && chat.history.loaded) {
        const top = this.store.contiguousTop(chat);
        if (top != null && message.seq > top + 1) this.fillRange(chat.id, top, message.seq).catch(() => {});
      }
      this.conversation.render();
      this.conversation.renderHead();
    }
  }

  onRead({ chat_id: chatId, user_id: userId, seq }) {
    if (userId === this.store.me.id) {
      if (!this.store.markRead(chatId, seq)) this.refreshChat(chatId);
      this.renderList();
      return;
    }
    if (this.store.setPeerRead(chatId, userId, seq) && chatId === this.activeId) this.conversation.render();
  }

  onError(frame) {
    if (!frame.ref || !this.store.outbox.has(frame.ref)) return;
    if (frame.code === 'rate_limited') {
      setTimeout(() => this._sendEntry(this.store.outbox.get(frame.ref)), 1000);
      return;
    }
    const reasons = { not_member: 'you are not in this chat', too_large: 'too long', validation_error: 'not allowed' };
    this.store.fail(frame.ref, reasons[frame.code] || frame.message);
    this._outboxChanged(this.store.outbox.get(frame.ref)?.chat_id);
  }

  _ack(chatId, seq) {
    if ((this.acks.get(chatId) || 0) < seq) this.acks.set(chatId, seq);
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      for (const [id, upTo] of this.acks) this.socket.send({ type: 'ack', chat_id: id, seq: upTo });
      this.acks.clear(); // unsent acks need no keeping: the backlog repeats, the store dedupes
    }, ACK_DELAY);
  }

  /** Read (after_seq, before_seq) of a chat over REST, page by page, into the store. */
  async fillRange(chatId, afterSeq, beforeSeq) {
    if (!this.store.chats.has(chatId)) await this._fetchChat(chatId);
    let after = afterSeq;
    for (let page = 0; page < 50; page += 1) {
      const query = new URLSearchParams({ after_seq: String(after), limit: String(RANGE_PAGE) });
      if (beforeSeq != null) query.set('before_seq', String(beforeSeq));
      const { items } = await this.api.get(`/api/v1/chats/${chatId}/messages?${query}`);
      for (const m of items) this.store.addMessage(m);
      if (items.length < RANGE_PAGE) break;
      after = items[items.length - 1].seq;
    }
    await this.refreshChat(chatId);
    if (chatId === this.activeId) this.conversation.render();
  }

  // --- typing -------------------------------------------------------------------------------------

  typing(chatId) {
    const now = Date.now();
    if (now - (this.lastTyping.get(chatId) || 0) < TYPING_EVERY) return;
    if (this.socket.send({ type: 'typing', chat_id: chatId })) this.lastTyping.set(chatId, now);
  }

  _typingChanged() {
    this.renderList();
    this.conversation.renderHead();
    clearTimeout(this.typingTimer);
    const next = Math.min(...[...this.store.typing.values()].flatMap((m) => [...m.values()]), Infinity);
    if (Number.isFinite(next)) this.typingTimer = setTimeout(() => this._typingChanged(), Math.max(50, next - Date.now() + 20));
  }

  // --- reading ------------------------------------------------------------------------------------

  /** Mark the open chat read up to its newest message when the reader can see it. */
  maybeRead() {
    const chat = this.activeId && this.store.chats.get(this.activeId);
    if (!chat || !chat.history.loaded || document.visibilityState !== 'visible' || !this.conversation.atBottom) return;
    const top = chat.last && chat.messages.has(chat.last_seq) ? chat.last_seq : this.store.contiguousTop(chat);
    if (!top || top <= chat.read_seq) return;
    this.store.markRead(chat.id, top);
    if (!this.socket.send({ type: 'read', chat_id: chat.id, seq: top })) this.unsentReads.set(chat.id, top);
    this.renderList();
  }

  // --- sending ------------------------------------------------------------------------------------

  send(chatId, text, media) {
    const entry = {
      client_msg_id: randomId(),
      chat_id: chatId,
      text,
      attachments: media.map((m) => m.id),
      media,
      created_at: new Date().toISOString(),
    };
    const kept = this.store.queue(entry);
    this._outboxChanged(chatId);
    this._sendEntry(kept);
  }

  _sendEntry(entry) {
    if (!entry || entry.status !== 'pending') return;
    const frame = { type: 'send', chat_id: entry.chat_id, client_msg_id: entry.client_msg_id, text: entry.text };
    if (entry.attachments.length) frame.attachments = entry.attachments;
    if (this.socket.send(frame) || !navigator.onLine) return; // offline: kept for the next `ready`
    // no socket right now: REST takes it (the same client_msg_id makes a later resend harmless)
    const body = { client_msg_id: entry.client_msg_id, text: entry.text };
    if (entry.attachments.length) body.attachments = entry.attachments;
    this.api
      .post(`/api/v1/chats/${entry.chat_id}/messages`, body)
      .then((message) => this.onMessage(message, false))
      .catch((err) => {
        if (err.status === 0 || err.status >= 500 || err.status === 429 || err.status === 401) return; // kept for the next `ready`
        this.store.fail(entry.client_msg_id, err.message);
        this._outboxChanged(entry.chat_id);
      });
  }

  flushOutbox() {
    for (const entry of this.store.outbox.values()) if (entry.status === 'pending') this._sendEntry(entry);
  }

  retrySend(clientMsgId) {
    const entry = this.store.retry(clientMsgId);
    this._outboxChanged(entry?.chat_id);
    this._sendEntry(entry);
  }

  discardSend(clientMsgId) {
    const entry = this.store.outbox.get(clientMsgId);
    this.store.discard(clientMsgId);
    this._outboxChanged(entry?.chat_id);
  }

  _outboxChanged(chatId) {
    this.renderList();
    if (chatId === this.activeId) this.conversation.render();
  }

  async upload(file, onProgress, signal) {
    const media = await this.media.upload(file, onProgress, signal);
    this.media.seedPreview(media, file);
    return media;
  }

  async showImage(media) {
    const dialog = $('lightbox');
    const img = $('lightbox-img');
    img.alt = 'Image';
    img.removeAttribute('src');
    dialog.showModal();
    try {
      img.src = await this.media.fileUrl(media);
    } catch {
      img.src = await this.media.previewUrl(media).catch(() => '');
    }
  }

  // --- navigation ---------------------------------------------------------------------------------

  route() {
    const match = location.hash.match(/^#\/chat\/([0-9]+)$/);
    if (match) this.openChat(match[1]);
    else this._showList();
  }

  async openChat(id) {
    if (!this.store.chats.has(id)) {
      await this._fetchChat(id).catch(() => null);
      if (!this.store.chats.has(id)) {
        history.replaceState(null, '', '#/');
        this._showList();
        return;
      }
    }
    const chat = this.store.chats.get(id);
    this.activeId = id;
    document.querySelector('.shell').classList.add('chat-open');
    this.conversation.open(chat);
    this.renderList();
    if (!this.isPhone() || document.activeElement === document.body) this.conversation.focusComposer();
    if (!chat.members) this._complete(chat).then(() => this._askPresence(chat));
    else this._askPresence(chat);
    if (!chat.history.loaded) await this.loadHistory(chat);
  }

  /** Members of a big group get no pushed presence (the node's group limit): a group's
   * presence is asked for when it is opened, at most PRESENCE_QUERY_MAX members. */
  _askPresence(chat) {
    if (chat.kind !== 'group' || !chat.members || chat.id !== this.activeId) return;
    const ids = chat.members.map((m) => String(m.id)).filter((id) => id !== this.store.me.id);
    if (ids.length) this.socket.send({ type: 'presence_query', user_ids: ids.slice(0, PRESENCE_QUERY_MAX) });
  }

  closeChat() {
    if (location.hash.startsWith('#/chat/')) location.hash = '#/';
    else this._showList();
  }

  _showList() {
    const previous = this.activeId;
    this.activeId = null;
    document.querySelector('.shell').classList.remove('chat-open');
    this.conversation.close();
    this.renderList();
    if (previous) $('chat-list').querySelector(`[data-chat="${previous}"]`)?.focus();
  }

  async loadHistory(chat) {
    chat.history.loading = true;
    this.conversation.render();
    try {
      const { items } = await this.api.get(`/api/v1/chats/${chat.id}/messages?limit=${PAGE}`);
      for (const m of items) this.store.addMessage(m);
      chat.history.oldest = items.length ? items[0].seq : chat.last_seq + 1;
      chat.history.complete = items.length < PAGE;
      chat.history.loaded = true;
      chat.history.error = false;
    } catch {
      chat.history.error = true;
    } finally {
      chat.history.loading = false;
    }
    if (chat.id === this.activeId) this.conversation.render({ toBottom: true });
    this.renderList();
  }

  async loadOlder(chat) {
    if (chat.history.loading || chat.history.complete) return;
    chat.history.loading = true;
    this.conversation.render({ older: true });
    try {
      const { items } = await this.api.get(`/api/v1/chats/${chat.id}/messages?before_seq=${chat.history.oldest}&limit=${PAGE}`);
      for (const m of items) this.store.addMessage(m);
      if (items.length) chat.history.oldest = items[0].seq;
      chat.history.complete = items.length < PAGE;
    } catch {
      chat.history.error = true;
    } finally {
      chat.history.loading = false;
    }
    if (chat.id === this.activeId) this.conversation.render({ older: true });
  }

  // --- rendering ----------------------------------------------------------------------------------

  renderList() {
    renderChatList(this.store, { activeId: this.activeId, filter: this.filter });
    let unread = 0;
    for (const chat of this.store.chats.values()) unread += chat.unread_count;
    document.title = unread ? `(${unread}) Messenger` : 'Messenger';
  }
}

// --- boot -----------------------------------------------------------------------------------------

async function boot() {
  registerWorker();
  const session = new Session();
  const auth = new AuthView(session);
  let app = null;

  const enter = async () => {
    const api = new Api(session);
    let me;
    try {
      me = await api.get('/api/v1/users/me');
    } catch (err) {
      if (!session.signedIn) return; // refused: 'signedout' shows the form
      $('loading').hidden = false;
      setTimeout(enter, 3000); // the node is away: try again
      return;
    }
    auth.hide();
    $('loading').hidden = true;
    app = new App(session, me);
    window.messenger = app; // for the curious (and for tests): the running client
    await app.start();
  };

  session.addEventListener('signedin', () => enter());
  session.addEventListener('signedout', () => {
    if (app) {
      location.replace('/'); // a clean page: nothing of the last user stays in memory
      return;
    }
    $('loading').hidden = true;
    auth.show();
  });
  session.start();
  if (session.signedIn) await enter();
  else {
    $('loading').hidden = true;
    auth.show();
  }
}

boot();
