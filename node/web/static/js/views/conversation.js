// The open chat: header, message list (keyed updates, scroll-back, sticking to the bottom), the
// typing line and the composer with attachments.

import { $, h, icon, reconcile } from '../dom.js';
import { avatarTone, clockTime, dayKey, dayLabel, extensionFor, fileKind, fileSize, initials, linkify } from '../format.js';
import { isImage } from '../media.js';

const NEAR_BOTTOM = 80; // px: closer than this to the end counts as "at the bottom"
const LOAD_OLDER_AT = 300; // px from the top: fetch the previous page
const GROUP_GAP = 5 * 60_000; // consecutive messages of one sender within this are one group
const MAX_ATTACHMENTS = 10;

export function fillAvatar(el, id, name, online = null) {
  el.className = `avatar ${avatarTone(id)}`;
  el.textContent = initials(name);
  if (online !== null) {
    el.append(h('span', { class: `dot${online ? ' on' : ''}` }));
  }
}

export class Conversation {
  constructor(app) {
    this.app = app;
    this.store = app.store;
    this.chat = null;
    this.list = $('message-list');
    this.scroller = $('messages');
    this.input = $('message-input');
    this.tray = $('tray');
    this.stick = true;
    this.unseenBelow = 0;
    this.drafts = new Map();
    this.uploads = []; // {id, file, media|null, progress, error, abort}
    this._bind();
  }

  _bind() {
    const { app } = this;
    this.scroller.addEventListener('scroll', () => this._onScroll(), { passive: true });
    $('jump-btn').addEventListener('click', () => this.scrollToBottom(true));
    $('back-btn').addEventListener('click', () => app.closeChat());
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (e) => {
      const coarse = matchMedia('(pointer: coarse)').matches;
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !coarse) {
        e.preventDefault();
        this.submit();
      } else if (e.key === 'Escape' && app.isPhone()) {
        app.closeChat();
      }
    });
    this.input.addEventListener('input', () => {
      this._autosize();
      this._updateSend();
      if (this.chat && this.input.value.trim()) app.typing(this.chat.id);
    });
    this.input.addEventListener('paste', (e) => {
      const files = [...(e.clipboardData?.files || [])];
      if (files.length && this.app.media.available) {
        e.preventDefault();
        this.addFiles(files);
      }
    });
    $('attach-btn').addEventListener('click', () => $('file-input').click());
    $('file-input').addEventListener('change', (e) => {
      this.addFiles([...e.target.files]);
      e.target.value = '';
    });
    const pane = $('chat-pane');
    pane.addEventListener('dragover', (e) => {
      if (this.app.media.available && e.dataTransfer?.types.includes('Files')) {
        e.preventDefault();
        pane.classList.add('dropping');
      }
    });
    pane.addEventListener('dragleave', () => pane.classList.remove('dropping'));
    pane.addEventListener('drop', (e) => {
      pane.classList.remove('dropping');
      if (!this.app.media.available || !e.dataTransfer?.files.length) return;
      e.preventDefault();
      this.addFiles([...e.dataTransfer.files]);
    });
    this.list.addEventListener('click', (e) => this._onListClick(e));
  }

  // --- opening and closing ------------------------------------------------------------------------

  open(chat) {
    if (this.chat && this.chat.id !== chat.id) this._leave();
    const switching = !this.chat || this.chat.id !== chat.id;
    this.chat = chat;
    $('no-chat').hidden = true;
    $('chat-pane').hidden = false;
    if (switching) {
      this.list.replaceChildren();
      this.input.value = this.drafts.get(chat.id) || '';
      this._autosize();
      this.stick = true;
      this.unseenBelow = 0;
      this._clearUploads();
      $('composer-error').textContent = '';
    }
    this.renderHead();
    this.render({ toBottom: switching });
    this._updateSend();
  }

  close() {
    if (this.chat) this._leave();
    this.chat = null;
    $('chat-pane').hidden = true;
    $('no-chat').hidden = false;
  }

  _leave() {
    this.drafts.set(this.chat.id, this.input.value);
    this._clearUploads();
  }

  focusComposer() {
    this.input.focus({ preventScroll: true });
  }

  // --- header -------------------------------------------------------------------------------------

  renderHead() {
    const { chat, store } = this;
    if (!chat) return;
    const name = store.chatName(chat);
    $('chat-title').textContent = name;
    const peer = store.peerOf(chat);
    fillAvatar($('chat-avatar'), peer ? peer.id : chat.id, name, peer ? store.isOnline(peer.id) : null);
    $('chat-subtitle').textContent = this._subtitle();
    $('chat-subtitle').classList.toggle('live', store.typers(chat.id).length > 0 || Boolean(peer && store.isOnline(peer.id)));
    this.renderTyping();
  }

  _subtitle() {
    const { chat, store } = this;
    const typers = store.typers(chat.id);
    if (chat.kind === 'direct') {
      if (typers.length) return 'typing…';
      const peer = store.peerOf(chat);
      if (!peer || !store.presenceKnown(peer.id)) return '';
      return store.isOnline(peer.id) ? 'online' : 'offline';
    }
    const members = chat.members || [];
    const online = members.filter((m) => m.id !== store.me.id && store.isOnline(m.id)).length;
    const count = `${members.length} member${members.length === 1 ? '' : 's'}`;
    return online ? `${count} · ${online} online` : count;
  }

  renderTyping() {
    const { chat, store } = this;
    if (!chat) return;
    const names = store.typers(chat.id).map((id) => store.userName(id));
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    const line = $('typing');
    if (line.textContent !== text) line.textContent = text;
    line.classList.toggle('on', Boolean(text));
  }

  // --- messages -----------------------------------------------------------------------------------

  /**
   * Bring the list up to date. `toBottom`: scroll to the newest message; `older`: messages were
   * added above, keep what the reader sees in place; otherwise stick to the bottom only if the
   * reader was there.
   */
  render({ toBottom = false, older = false } = {}) {
    const { chat, store } = this;
    if (!chat) return;
    const scroller = this.scroller;
    const wasAtBottom = this.stick;
    const beforeHeight = scroller.scrollHeight;
    const beforeTop = scroller.scrollTop;
    const countBefore = this.list.querySelectorAll('.msg').length;

    reconcile(this.list, this._rows());
    this._historyStatus();

    if (older) {
      scroller.scrollTop = beforeTop + (scroller.scrollHeight - beforeHeight);
    } else if (toBottom || wasAtBottom) {
      this.scrollToBottom(false);
    } else {
      const added = this.list.querySelectorAll('.msg').length - countBefore;
      if (added > 0) this.unseenBelow += added;
      this._updateJump();
    }
    this.app.maybeRead();
    this._maybeLoadOlder();
  }

  _rows() {
    const { chat, store } = this;
    const me = store.me.id;
    const messages = chat.history.loaded || chat.messages.size ? store.visibleMessages(chat) : [];
    const pending = store.pendingFor(chat.id);
    const items = [
      ...messages.map((m) => ({ m, pending: null })),
      ...pending.map((p) => ({ m: { ...p, sender_id: me, attachments: p.media || [] }, pending: p })),
    ];
    // the newest of my messages that someone has read gets the "Seen" label
    let seenSeq = 0;
    for (let i = messages.length - 1; i >= 0; i -= 1) {
      const m = messages[i];
      if (m.sender_id === me && store.seenBy(chat.id, m.seq) > 0) {
        seenSeq = m.seq;
        break;
      }
    }
    const rows = [];
    let lastDay = null;
    items.forEach(({ m, pending: p }, i) => {
      const day = dayKey(m.created_at);
      if (day !== lastDay) {
        lastDay = day;
        const label = dayLabel(m.created_at);
        rows.push({
          key: `d-${day}`,
          sig: label,
          build: () => h('li', { class: 'day', role: 'separator' }, h('span', { text: label })),
        });
      }
      const prev = items[i - 1]?.m;
      const next = items[i + 1]?.m;
      const joinsPrev = prev && prev.sender_id === m.sender_id && dayKey(prev.created_at) === day &&
        Date.parse(m.created_at) - Date.parse(prev.created_at) < GROUP_GAP;
      const joinsNext = next && next.sender_id === m.sender_id && dayKey(next.created_at) === day &&
        Date.parse(next.created_at) - Date.parse(m.created_at) < GROUP_GAP;
      const mine = m.sender_id === me;
      let status = '';
      if (p) status = p.status;
      else if (mine) status = store.seenBy(chat.id, m.seq) > 0 ? 'seen' : 'sent';
      const seenLabel = !p && m.seq === seenSeq ? this._seenText(m.seq) : '';
      const sender = !mine && chat.kind === 'group' && !joinsPrev ? store.userName(m.sender_id) : '';
      rows.push({
        key: p ? `p-${p.client_msg_id}` : `m-${m.seq}`,
        sig: [status, joinsPrev, joinsNext, seenLabel, sender, p?.reason || ''].join('|'),
        build: () => this._messageRow(m, { mine, status, joinsPrev, joinsNext, seenLabel, sender, pending: p }),
      });
    });
    return rows;
  }

  _seenText(seq) {
    if (this.chat.kind === 'direct') return 'Seen';
    const n = this.store.seenBy(this.chat.id, seq);
    return `Seen by ${n}`;
  }

  _messageRow(m, { mine, status, joinsPrev, joinsNext, seenLabel, sender, pending }) {
    const classes = ['msg', mine ? 'mine' : 'theirs'];
    if (!joinsPrev) classes.push('first');
    if (!joinsNext) classes.push('last');
    if (pending) classes.push(`is-${pending.status}`);
    const time = h('time', { datetime: m.created_at, text: clockTime(m.created_at) });
    const meta = h('span', { class: 'meta' }, time, mine ? this._statusIcon(status) : null);
    const bubble = h('div', { class: 'bubble' });
    if (m.attachments?.length) bubble.append(this._attachments(m.attachments));
    if (m.text) bubble.append(h('p', { class: 'text' }, ...this._text(m.text)));
    bubble.classList.toggle('media-only', !m.text && Boolean(m.attachments?.length));
    bubble.append(meta);
    const who = mine ? 'You' : this.store.userName(m.sender_id);
    const row = h('li', { class: classes.join(' '), 'aria-label': `${who}, ${clockTime(m.created_at)}` });
    if (sender) row.append(h('span', { class: `sender ${avatarTone(m.sender_id)}`, text: sender }));
    row.append(bubble);
    if (pending?.status === 'failed') {
      row.append(
        h('p', { class: 'failed-note' },
          h('span', { text: `Not sent${pending.reason ? `: ${pending.reason}` : ''}. ` }),
          h('button', { type: 'button', class: 'link', 'data-retry': pending.client_msg_id, text: 'Retry' }),
          h('span', { text: ' · ' }),
          h('button', { type: 'button', class: 'link', 'data-discard': pending.client_msg_id, text: 'Delete' })),
      );
    }
    if (seenLabel) row.append(h('span', { class: 'seen-label', text: seenLabel }));
    return row;
  }

  _statusIcon(status) {
    const labels = { pending: 'Sending', failed: 'Not sent', sent: 'Sent', seen: 'Seen' };
    const names = { pending: 'clock', failed: 'alert', sent: 'check', seen: 'checks' };
    const span = h('span', { class: `status ${status}`, role: 'img', 'aria-label': labels[status] || '' });
    span.append(icon(names[status] || 'check'));
    return span;
  }

  _text(text) {
    return linkify(text).map((part) =>
      part.href
        ? h('a', { href: part.href, target: '_blank', rel: 'noopener noreferrer nofollow', text: part.text })
        : document.createTextNode(part.text),
    );
  }

  _attachments(list) {
    const images = list.filter(isImage);
    const files = list.filter((m) => !isImage(m));
    const box = h('div', { class: 'attachments' });
    if (images.length) box.append(h('div', { class: `images${images.length > 1 ? ' grid' : ''}` }, images.map((m) => this._image(m))));
    for (const media of files) box.append(this._file(media));
    return box;
  }

  _image(media) {
    const img = h('img', { alt: 'Image', decoding: 'async', width: media.width || 240, height: media.height || 180 });
    const button = h('button', { type: 'button', class: 'att-image loading', 'data-media': media.id, 'aria-label': 'Open image' }, img);
    const source = media.has_preview === false ? this.app.media.fileUrl(media) : this.app.media.previewUrl(media);
    source.then(
      (url) => {
        img.addEventListener('load', () => {
          button.classList.remove('loading');
          if (this.stick) this.scrollToBottom(false);
        }, { once: true });
        img.src = url;
      },
      () => {
        button.classList.remove('loading');
        button.classList.add('broken');
        img.alt = 'Image unavailable';
      },
    );
    button.mediaRef = media;
    return button;
  }

  _file(media) {
    const kind = fileKind(media.content_type);
    const link = h('a', { class: 'att-file', href: '#', 'data-download': media.id, 'aria-label': `Download ${kind}, ${fileSize(media.size || 0)}` },
      icon('file', 'file-icon'),
      h('span', { class: 'file-text' },
        h('span', { class: 'file-name', text: media.name || kind }),
        h('span', { class: 'file-size', text: fileSize(media.size || 0) })));
    link.mediaRef = media;
    return link;
  }

  async _onListClick(e) {
    const retry = e.target.closest('[data-retry]');
    if (retry) return this.app.retrySend(retry.dataset.retry);
    const discard = e.target.closest('[data-discard]');
    if (discard) return this.app.discardSend(discard.dataset.discard);
    const image = e.target.closest('.att-image');
    if (image && image.mediaRef) return this.app.showImage(image.mediaRef);
    const file = e.target.closest('.att-file');
    if (file && file.mediaRef) {
      e.preventDefault();
      const media = file.mediaRef;
      try {
        const url = await this.app.media.fileUrl(media);
        const a = h('a', { href: url, download: media.name || `attachment-${media.id}.${extensionFor(media.content_type)}` });
        document.body.append(a);
        a.click();
        a.remove();
      } catch {
        $('composer-error').textContent = 'That file could not be downloaded.';
      }
    }
    return undefined;
  }

  _historyStatus() {
    const { history } = this.chat;
    const status = $('history-status');
    let text = '';
    if (history.loading) text = 'Loading…';
    else if (history.error) text = 'Could not load older messages.';
    else if (history.loaded && history.complete) {
      text = this.chat.messages.size ? 'This is the beginning of the conversation.' : 'No messages yet. Say hello!';
    }
    status.textContent = text;
  }

  // --- scrolling ----------------------------------------------------------------------------------

  _onScroll() {
    const s = this.scroller;
    this.stick = s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM;
    if (this.stick) {
      this.unseenBelow = 0;
      this.app.maybeRead();
    }
    this._updateJump();
    this._maybeLoadOlder();
  }

  _maybeLoadOlder() {
    const { chat } = this;
    if (!chat || !chat.history.loaded || chat.history.complete || chat.history.loading || chat.history.error) return;
    if (this.scroller.scrollTop < LOAD_OLDER_AT) this.app.loadOlder(chat);
  }

  scrollToBottom(smooth) {
    const s = this.scroller;
    s.scrollTo({ top: s.scrollHeight, behavior: smooth ? 'smooth' : 'instant' });
    this.stick = true;
    this.unseenBelow = 0;
    this._updateJump();
  }

  _updateJump() {
    const button = $('jump-btn');
    button.hidden = this.stick;
    $('jump-count').textContent = this.unseenBelow > 0 ? String(this.unseenBelow) : '';
  }

  get atBottom() {
    return this.stick;
  }

  // --- composer -----------------------------------------------------------------------------------

  _autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  _updateSend() {
    const uploading = this.uploads.some((u) => !u.media && !u.error);
    const ready = this.uploads.some((u) => u.media);
    const text = this.input.value.trim();
    const button = $('send-btn');
    button.disabled = uploading || (!text && !ready);
    button.title = uploading ? 'Waiting for the upload to finish' : 'Send (Enter)';
  }

  showAttach(available) {
    $('attach-btn').hidden = !available;
  }

  addFiles(files) {
    const room = MAX_ATTACHMENTS - this.uploads.length;
    if (files.length > room) $('composer-error').textContent = `At most ${MAX_ATTACHMENTS} attachments per message.`;
    for (const file of files.slice(0, Math.max(0, room))) {
      const upload = { id: Math.random().toString(36).slice(2), file, media: null, progress: 0, error: '', abort: new AbortController() };
      this.uploads.push(upload);
      this.app
        .upload(file, (fraction) => {
          upload.progress = fraction;
          const bar = this.tray.querySelector(`[data-key="${upload.id}"] progress`);
          if (bar) bar.value = fraction;
        }, upload.abort.signal)
        .then((media) => {
          upload.media = { ...media, name: file.name };
        })
        .catch((err) => {
          if (err.code === 'aborted') return;
          upload.error = err.status === 413 ? 'Too large' : err.status === 404 ? 'Uploads are off' : err.message || 'Upload failed';
        })
        .finally(() => {
          this._renderTray();
          this._updateSend();
        });
    }
    this._renderTray();
    this._updateSend();
    this.focusComposer();
  }

  _renderTray() {
    this.tray.hidden = this.uploads.length === 0;
    reconcile(
      this.tray,
      this.uploads.map((u) => {
        const state = u.error ? 'error' : u.media ? 'done' : 'uploading';
        return { key: u.id, sig: state, build: () => this._trayItem(u) };
      }),
    );
  }

  _trayItem(u) {
    const remove = h('button', { type: 'button', class: 'icon-btn small', 'aria-label': `Remove ${u.file.name}` }, icon('close'));
    remove.addEventListener('click', () => {
      u.abort.abort();
      this.uploads = this.uploads.filter((x) => x !== u);
      this._renderTray();
      this._updateSend();
      this.focusComposer();
    });
    const status = u.error
      ? h('span', { class: 'tray-error', text: u.error })
      : u.media
        ? h('span', { class: 'tray-done', text: fileSize(u.file.size) })
        : h('progress', { max: 1, value: u.progress, 'aria-label': `Uploading ${u.file.name}` });
    if (u.file.type.startsWith('image/') && !u.thumb) u.thumb = URL.createObjectURL(u.file);
    return h('li', { class: `tray-item${u.error ? ' error' : ''}` },
      u.thumb ? h('img', { class: 'tray-thumb', src: u.thumb, alt: '' }) : icon('file', 'tray-icon'),
      h('span', { class: 'tray-text' }, h('span', { class: 'tray-name', text: u.file.name }), status),
      remove);
  }

  _clearUploads() {
    for (const u of this.uploads) {
      if (!u.media) u.abort.abort();
      if (u.thumb) URL.revokeObjectURL(u.thumb);
    }
    this.uploads = [];
    this._renderTray();
  }

  submit() {
    if (!this.chat || $('send-btn').disabled) return;
    const text = this.input.value.trim();
    const media = this.uploads.filter((u) => u.media).map((u) => u.media);
    if (!text && !media.length) return;
    if (text.length > 4000) {
      $('composer-error').textContent = 'A message can be at most 4000 characters.';
      return;
    }
    $('composer-error').textContent = '';
    this.app.send(this.chat.id, text, media);
    this.input.value = '';
    this.drafts.delete(this.chat.id);
    for (const u of this.uploads) if (u.thumb) URL.revokeObjectURL(u.thumb);
    this.uploads = [];
    this._renderTray();
    this._autosize();
    this._updateSend();
    this.scrollToBottom(false);
  }
}
