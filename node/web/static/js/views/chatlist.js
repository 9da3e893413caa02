// The chat list: one link per chat (keyboard and screen-reader friendly), newest activity first,
// with the last message, its time, an unread badge and the peer's presence.

import { $, h, reconcile } from '../dom.js';
import { listStamp } from '../format.js';
import { fillAvatar } from './conversation.js';

function preview(store, chat) {
  const typers = store.typers(chat.id);
  if (typers.length) {
    return { text: chat.kind === 'group' ? `${store.userName(typers[0])} is typing…` : 'typing…', typing: true };
  }
  const pending = store.pendingFor(chat.id);
  const m = pending.length ? { ...pending[pending.length - 1], sender_id: store.me.id } : chat.last;
  if (!m) return { text: chat.last_seq ? '' : 'No messages yet', typing: false };
  let body = m.text;
  if (!body) {
    const atts = m.attachments?.length ? m.attachments : m.media || [];
    const images = atts.filter((a) => String(a.content_type).startsWith('image/')).length;
    body = images === atts.length && images ? (images > 1 ? `${images} photos` : 'Photo') : 'Attachment';
  }
  let who = '';
  if (m.sender_id === store.me.id) who = 'You: ';
  else if (chat.kind === 'group') who = `${store.userName(m.sender_id)}: `;
  return { text: who + body, typing: false };
}

export function renderChatList(store, { activeId, filter }) {
  const list = $('chat-list');
  const needle = filter.trim().toLowerCase();
  const chats = store.orderedChats().filter((c) => !needle || store.chatName(c).toLowerCase().includes(needle));
  $('chat-list-empty').hidden = store.chats.size > 0;
  const rows = chats.map((chat) => {
    const name = store.chatName(chat);
    const peer = store.peerOf(chat);
    const online = peer ? store.isOnline(peer.id) : null;
    const { text, typing } = preview(store, chat);
    const stamp = chat.last ? listStamp(chat.last.created_at) : '';
    const unread = chat.unread_count;
    const active = chat.id === activeId;
    const sig = [name, online, text, typing, stamp, unread, active, chat.last?.created_at].join('|');
    return {
      key: chat.id,
      sig,
      build: () => {
        const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true' });
        fillAvatar(avatar, peer ? peer.id : chat.id, name, online);
        const label = [name, online ? 'online' : null, unread ? `${unread} unread` : null].filter(Boolean).join(', ');
        return h('li', {},
          h('a', { class: `chat-item${active ? ' active' : ''}${unread ? ' unread' : ''}`, href: `#/chat/${chat.id}`,
            'aria-current': active ? 'page' : null, 'aria-label': label, 'data-chat': chat.id },
            avatar,
            h('span', { class: 'chat-main' },
              h('span', { class: 'chat-row' },
                h('span', { class: 'chat-name', text: name }),
                h('span', { class: 'chat-time', text: stamp })),
              h('span', { class: 'chat-row' },
                h('span', { class: `chat-preview${typing ? ' typing' : ''}`, text }),
                unread ? h('span', { class: 'badge', 'aria-hidden': 'true', text: unread > 99 ? '99+' : String(unread) }) : null))));
      },
    };
  });
  reconcile(list, rows);
}
