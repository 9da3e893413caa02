// What the client knows: chats, their loaded messages, users, presence, typing, read marks and
// the messages still waiting to be confirmed. Pure state and rules; no DOM and no network, so
// the rules can be checked on their own.
//
// Guarantees kept here:
//  - a message is known once per (chat_id, seq), however often it arrives (REST pages, backlog
//    after a reconnect, live frames) — `addMessage` answers whether it was new;
//  - unread counts start from the node's figure and only grow for messages above the chat's
//    `last_seq` as the node reported it, so a backlog message is never counted twice;
//  - a pending message is keyed by its client_msg_id and leaves the outbox when the node confirms
//    it (by `sent`, or by its own `message` frame, whichever comes first).

const OUTBOX = (userId) => `mn.outbox.${userId}`;
const READS = (userId) => `mn.reads.${userId}`;

export class Store extends EventTarget {
  constructor(me, storage = globalThis.localStorage) {
    super();
    this.me = me; // {id, username}
    this.storage = storage;
    this.chats = new Map();
    this.users = new Map([[me.id, me]]);
    this.presence = new Map(); // user_id -> bool
    this.typing = new Map(); // chat_id -> Map(user_id -> expires_at ms)
    this.outbox = new Map(); // client_msg_id -> {client_msg_id, chat_id, text, attachments, media, status, created_at}
    this.peerReads = new Map(); // chat_id -> Map(user_id -> seq)
    this._load();
  }

  _load() {
    try {
      for (const item of JSON.parse(this.storage.getItem(OUTBOX(this.me.id)) || '[]')) {
        this.outbox.set(item.client_msg_id, { ...item, status: 'pending' });
      }
      const reads = JSON.parse(this.storage.getItem(READS(this.me.id)) || '{}');
      for (const [chatId, byUser] of Object.entries(reads)) {
        this.peerReads.set(chatId, new Map(Object.entries(byUser)));
      }
    } catch {
      // a damaged entry is dropped, not fatal
    }
  }

  /** Drop what this user left in the browser's storage (on an explicit sign-out). */
  forget() {
    this.storage.removeItem(OUTBOX(this.me.id));
    this.storage.removeItem(READS(this.me.id));
  }

  _saveOutbox() {
    this.storage.setItem(OUTBOX(this.me.id), JSON.stringify([...this.outbox.values()]));
  }

  _saveReads() {
    const out = {};
    for (const [chatId, byUser] of this.peerReads) out[chatId] = Object.fromEntries(byUser);
    this.storage.setItem(READS(this.me.id), JSON.stringify(out));
  }

  changed(what, detail = {}) {
    this.dispatchEvent(new CustomEvent('change', { detail: { what, ...detail } }));
  }

  // --- chats ------------------------------------------------------------------------------------

  _blank(summary) {
    return {
      ...summary,
      messages: new Map(), // seq -> Message
      last: null, // newest known Message
      activity: summary.created_at,
      history: { loaded: false, oldest: null, complete: false, loading: false },
    };
  }

  /** Merge a Chat from REST (list or single). Local knowledge newer than it is kept. */
  upsertChat(summary) {
    const known = this.chats.get(summary.id);
    if (!known) {
      const chat = this._blank(summary);
      this.chats.set(summary.id, chat);
      return chat;
    }
    const { members } = summary;
    if (summary.last_seq >= known.last_seq) {
      known.last_seq = summary.last_seq;
      known.unread_count = summary.unread_count;
    }
    known.read_seq = Math.max(known.read_seq, summary.read_seq);
    if (known.read_seq >= known.last_seq) known.unread_count = 0;
    known.title = summary.title;
    if (members) known.members = members;
    return known;
  }

  setChatList(items) {
    const seen = new Set();
    for (const summary of items) {
      this.upsertChat(summary);
      seen.add(summary.id);
    }
    for (const id of [...this.chats.keys()]) if (!seen.has(id)) this.chats.delete(id);
    this.changed('chats');
  }

  /** Chats by most recent activity (the newest message, else creation). */
  orderedChats() {
    return [...this.chats.values()].sort((a, b) => (a.activity < b.activity ? 1 : a.activity > b.activity ? -1 : 0));
  }

  peerOf(chat) {
    if (chat.kind !== 'direct' || !chat.members) return null;
    return chat.members.find((m) => m.id !== this.me.id) || null;
  }

  chatName(chat) {
    if (chat.kind === 'group') return chat.title || 'Group';
    const peer = this.peerOf(chat);
    return peer ? peer.username : 'Direct chat';
  }

  userName(id) {
    const user = this.users.get(id);
    return user ? user.username : '…';
  }

  rememberUsers(users) {
    for (const user of users) this.users.set(user.id, user);
  }

  // --- messages ---------------------------------------------------------------------------------

  /**
   * Record a message; true when it was not known before. Updates the chat's newest message,
   * activity and unread count, and settles the outbox entry it confirms.
   */
  addMessage(message) {
    const chat = this.chats.get(message.chat_id);
    if (!chat) return false;
    if (message.sender_id === this.me.id) this._settle(message.client_msg_id);
    if (chat.messages.has(message.seq)) return false;
    chat.messages.set(message.seq, message);
    if (message.seq > chat.last_seq) {
      if (message.sender_id !== this.me.id && message.seq > chat.read_seq) chat.unread_count += 1;
      chat.last_seq = message.seq;
    }
    if (!chat.last || message.seq > chat.last.seq) {
      chat.last = message;
      if (message.created_at > chat.activity) chat.activity = message.created_at;
    }
    const typers = this.typing.get(chat.id);
    if (typers) typers.delete(message.sender_id);
    return true;
  }

  /** Messages of a chat as shown: the loaded history (and anything newer), ascending. */
  visibleMessages(chat) {
    const floor = chat.history.oldest ?? 0;
    return [...chat.messages.values()].filter((m) => m.seq >= floor).sort((a, b) => a.seq - b.seq);
  }

  /**
   * The highest seq held with every message from the history's start up to it (one below the
   * start when none is held); null before the history is loaded.
   */
  contiguousTop(chat) {
    if (chat.history.oldest == null) return null;
    let seq = chat.history.oldest - 1;
    while (chat.messages.has(seq + 1)) seq += 1;
    return seq;
  }

  // --- read marks -------------------------------------------------------------------------------

  /**
   * I (on any device) have read `chat` up to `seq`. Answers true when the unread count is exact
   * afterwards, false when the node should be asked for it (messages in between are not held).
   */
  markRead(chatId, seq) {
    const chat = this.chats.get(chatId);
    if (!chat || seq <= chat.read_seq) return true;
    chat.read_seq = seq;
    if (seq >= chat.last_seq) {
      chat.unread_count = 0;
      return true;
    }
    let unread = 0;
    for (let s = seq + 1; s <= chat.last_seq; s += 1) {
      const m = chat.messages.get(s);
      if (!m) return false;
      if (m.sender_id !== this.me.id) unread += 1;
    }
    chat.unread_count = unread;
    return true;
  }

  setPeerRead(chatId, userId, seq) {
    let byUser = this.peerReads.get(chatId);
    if (!byUser) {
      byUser = new Map();
      this.peerReads.set(chatId, byUser);
    }
    if ((byUser.get(userId) || 0) >= seq) return false;
    byUser.set(userId, seq);
    this._saveReads();
    return true;
  }

  /** How many others have read up to `seq` of `chatId`. */
  seenBy(chatId, seq) {
    const byUser = this.peerReads.get(chatId);
    if (!byUser) return 0;
    let n = 0;
    for (const [userId, upTo] of byUser) if (userId !== this.me.id && upTo >= seq) n += 1;
    return n;
  }

  // --- typing and presence ----------------------------------------------------------------------

  setTyping(chatId, userId, until) {
    if (userId === this.me.id) return;
    let typers = this.typing.get(chatId);
    if (!typers) {
      typers = new Map();
      this.typing.set(chatId, typers);
    }
    typers.set(userId, until);
  }

  typers(chatId, at = Date.now()) {
    const typers = this.typing.get(chatId);
    if (!typers) return [];
    for (const [userId, until] of typers) if (until <= at) typers.delete(userId);
    return [...typers.keys()];
  }

  /** `{type:"presence"}` in either shape: one user, or a batch in `users`. */
  applyPresence(frame) {
    const entries = Array.isArray(frame.users) ? frame.users : [frame];
    for (const { user_id: id, online } of entries) if (id != null) this.presence.set(String(id), Boolean(online));
  }

  /**
   * A new connection: the node follows `ready` with one frame listing the contacts that are
   * online, so everyone known now is offline unless such a frame says otherwise. People met
   * later stay unknown until a presence frame names them. Members of groups above the node's
   * presence limit get no pushed presence: the app asks for a group's (`presence_query`) when
   * the group is opened, so a big group's "n online" is as of that moment.
   */
  resetPresence() {
    this.presence.clear();
    for (const id of this.users.keys()) if (id !== this.me.id) this.presence.set(id, false);
  }

  isOnline(userId) {
    return this.presence.get(userId) === true;
  }

  presenceKnown(userId) {
    return this.presence.has(userId);
  }

  // --- outbox -----------------------------------------------------------------------------------

  /** Put a new message in the outbox; answers the entry as kept. */
  queue(entry) {
    const kept = { ...entry, status: 'pending' };
    this.outbox.set(entry.client_msg_id, kept);
    this._saveOutbox();
    const chat = this.chats.get(entry.chat_id);
    if (chat) chat.activity = new Date().toISOString();
    return kept;
  }

  fail(clientMsgId, reason) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry) return;
    entry.status = 'failed';
    entry.reason = reason;
  }

  retry(clientMsgId) {
    const entry = this.outbox.get(clientMsgId);
    if (entry) entry.status = 'pending';
    return entry;
  }

  discard(clientMsgId) {
    this.outbox.delete(clientMsgId);
    this._saveOutbox();
  }

  _settle(clientMsgId) {
    if (this.outbox.delete(clientMsgId)) this._saveOutbox();
  }

  pendingFor(chatId) {
    return [...this.outbox.values()].filter((e) => e.chat_id === chatId);
  }
}
