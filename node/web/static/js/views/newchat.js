// "New chat": a direct message (pick one person) or a group (a name and some people), with
// people found by username prefix as you type.

import { $, h, icon } from '../dom.js';
import { fillAvatar } from './conversation.js';

const SEARCH_DELAY = 200;

export class NewChatDialog {
  constructor(app) {
    this.app = app;
    this.dialog = $('new-chat-dialog');
    this.kind = 'direct';
    this.members = new Map(); // id -> User
    this.timer = null;
    this.seq = 0;
    $('tab-direct').addEventListener('click', () => this.setKind('direct'));
    $('tab-group').addEventListener('click', () => this.setKind('group'));
    for (const tab of [$('tab-direct'), $('tab-group')]) {
      tab.addEventListener('keydown', (e) => {
        if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
          const next = this.kind === 'direct' ? 'group' : 'direct';
          this.setKind(next);
          $(`tab-${next}`).focus();
        }
      });
    }
    $('user-search').addEventListener('input', () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.search(), SEARCH_DELAY);
    });
    $('user-search').addEventListener('keydown', (e) => {
      if (e.key === 'ArrowDown') {
        e.preventDefault();
        $('user-results').querySelector('button')?.focus();
      }
    });
    $('user-results').addEventListener('keydown', (e) => {
      const buttons = [...$('user-results').querySelectorAll('button')];
      const i = buttons.indexOf(document.activeElement);
      if (e.key === 'ArrowDown' && i < buttons.length - 1) {
        e.preventDefault();
        buttons[i + 1].focus();
      } else if (e.key === 'ArrowUp') {
        e.preventDefault();
        (i > 0 ? buttons[i - 1] : $('user-search')).focus();
      }
    });
    $('create-group-btn').addEventListener('click', () => this.createGroup());
  }

  open(kind = 'direct') {
    this.members.clear();
    $('user-search').value = '';
    $('group-title').value = '';
    $('user-results').replaceChildren();
    this.setKind(kind);
    this.dialog.showModal();
    $(kind === 'group' ? 'group-title' : 'user-search').focus();
  }

  setKind(kind) {
    this.kind = kind;
    const group = kind === 'group';
    $('tab-direct').setAttribute('aria-selected', String(!group));
    $('tab-group').setAttribute('aria-selected', String(group));
    $('tab-direct').tabIndex = group ? -1 : 0;
    $('tab-group').tabIndex = group ? 0 : -1;
    $('new-chat-body').setAttribute('aria-labelledby', group ? 'tab-group' : 'tab-direct');
    $('group-title-field').hidden = !group;
    $('group-actions').hidden = !group;
    $('group-members').hidden = !group || this.members.size === 0;
    $('new-chat-error').textContent = '';
    this.renderMembers();
    this.search();
  }

  async search() {
    const q = $('user-search').value.trim();
    const mine = ++this.seq;
    if (!q) {
      $('user-results').replaceChildren();
      return;
    }
    try {
      const { items } = await this.app.api.get(`/api/v1/users?${new URLSearchParams({ q, limit: '20' })}`);
      if (mine !== this.seq) return; // a newer search is on its way
      this.renderResults(items.filter((u) => u.id !== this.app.store.me.id));
    } catch (err) {
      if (mine === this.seq) $('new-chat-error').textContent = err.message;
    }
  }

  renderResults(users) {
    const list = $('user-results');
    if (!users.length) {
      list.replaceChildren(h('li', { class: 'muted', text: 'Nobody by that name.' }));
      return;
    }
    list.replaceChildren(
      ...users.map((user) => {
        const avatar = h('span', { class: 'avatar small', 'aria-hidden': 'true' });
        fillAvatar(avatar, user.id, user.username, this.app.store.presence.has(user.id) ? this.app.store.isOnline(user.id) : null);
        const chosen = this.members.has(user.id);
        const label = this.kind === 'group' ? `${chosen ? 'Remove' : 'Add'} ${user.username}` : `Message ${user.username}`;
        const button = h('button', { type: 'button', class: `user-result${chosen ? ' chosen' : ''}`, 'aria-label': label, 'aria-pressed': this.kind === 'group' ? String(chosen) : null },
          avatar, h('span', { class: 'user-name', text: user.username }),
          this.kind === 'group' ? h('span', { class: 'user-action', text: chosen ? 'Added' : 'Add' }) : null);
        button.addEventListener('click', () => this.pick(user));
        return h('li', {}, button);
      }),
    );
  }

  async pick(user) {
    if (this.kind === 'group') {
      if (this.members.has(user.id)) this.members.delete(user.id);
      else this.members.set(user.id, user);
      this.renderMembers();
      this.search();
      return;
    }
    try {
      const chat = await this.app.api.post('/api/v1/chats', { kind: 'direct', user_id: user.id });
      this.dialog.close();
      await this.app.adoptChat(chat);
    } catch (err) {
      $('new-chat-error').textContent = err.message;
    }
  }

  renderMembers() {
    const list = $('group-members');
    list.hidden = this.kind !== 'group' || this.members.size === 0;
    list.replaceChildren(
      ...[...this.members.values()].map((user) => {
        const remove = h('button', { type: 'button', class: 'chip-remove', 'aria-label': `Remove ${user.username}` }, icon('close'));
        remove.addEventListener('click', () => {
          this.members.delete(user.id);
          this.renderMembers();
          this.search();
        });
        return h('li', { class: 'chip' }, h('span', { text: user.username }), remove);
      }),
    );
  }

  async createGroup() {
    const title = $('group-title').value.trim();
    if (!title) {
      $('new-chat-error').textContent = 'Give the group a name.';
      $('group-title').focus();
      return;
    }
    try {
      const chat = await this.app.api.post('/api/v1/chats', { kind: 'group', title, member_ids: [...this.members.keys()] });
      this.dialog.close();
      await this.app.adoptChat(chat);
    } catch (err) {
      $('new-chat-error').textContent = err.message;
    }
  }
}
