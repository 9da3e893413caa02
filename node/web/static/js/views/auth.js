// Sign in / create account: one form with two modes, checked before it is sent, with the node's
// errors shown in words.

import { $ } from '../dom.js';

const USERNAME = /^[A-Za-z0-9_.-]{3,32}$/;

export class AuthView {
  constructor(session) {
    this.session = session;
    this.mode = 'signin';
    this.busy = false;
    $('tab-signin').addEventListener('click', () => this.setMode('signin'));
    $('tab-signup').addEventListener('click', () => this.setMode('signup'));
    for (const tab of [$('tab-signin'), $('tab-signup')]) {
      tab.addEventListener('keydown', (e) => {
        if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
          const next = this.mode === 'signin' ? 'signup' : 'signin';
          this.setMode(next);
          $(`tab-${next}`).focus();
        }
      });
    }
    $('auth-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
  }

  show() {
    $('auth-view').hidden = false;
    this.setMode(this.mode);
    $('auth-username').focus();
  }

  hide() {
    $('auth-view').hidden = true;
  }

  setMode(mode) {
    this.mode = mode;
    const signup = mode === 'signup';
    $('tab-signin').setAttribute('aria-selected', String(!signup));
    $('tab-signup').setAttribute('aria-selected', String(signup));
    $('tab-signin').tabIndex = signup ? -1 : 0;
    $('tab-signup').tabIndex = signup ? 0 : -1;
    $('auth-form').setAttribute('aria-labelledby', signup ? 'tab-signup' : 'tab-signin');
    $('auth-submit').textContent = signup ? 'Create account' : 'Sign in';
    $('auth-tagline').textContent = signup ? 'Pick a username and a password. That is all.' : 'Sign in to pick up where you left off.';
    $('auth-password').autocomplete = signup ? 'new-password' : 'current-password';
    $('auth-username-hint').hidden = !signup;
    $('auth-password-hint').hidden = !signup;
    this.error('');
  }

  error(text, field = null) {
    $('auth-error').textContent = text;
    for (const id of ['auth-username', 'auth-password']) {
      $(id).setAttribute('aria-invalid', String(id === field));
    }
  }

  async submit() {
    if (this.busy) return;
    const username = $('auth-username').value.trim();
    const password = $('auth-password').value;
    const signup = this.mode === 'signup';
    if (signup && !USERNAME.test(username)) return this.error('Usernames are 3–32 letters, digits, dots, dashes or underscores.', 'auth-username');
    if (!username) return this.error('Enter your username.', 'auth-username');
    if (signup && (password.length < 8 || password.length > 128)) return this.error('Passwords are 8 to 128 characters.', 'auth-password');
    if (!password) return this.error('Enter your password.', 'auth-password');
    this.busy = true;
    $('auth-submit').disabled = true;
    this.error('');
    try {
      if (signup) await this.session.signUp(username, password);
      else await this.session.signIn(username, password);
      $('auth-password').value = '';
    } catch (err) {
      const messages = {
        username_taken: ['That username is taken. Try another one.', 'auth-username'],
        invalid_credentials: ['Wrong username or password.', 'auth-password'],
        rate_limited: [`Too many attempts. Try again in ${err.retryAfter || 'a few'} seconds.`, null],
        network: ['The server cannot be reached. Check your connection.', null],
      };
      const [text, field] = messages[err.code] || [err.message || 'Something went wrong.', null];
      this.error(text, field);
    } finally {
      this.busy = false;
      $('auth-submit').disabled = false;
    }
    return undefined;
  }
}
