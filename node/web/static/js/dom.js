// Tiny DOM helpers: elements are built with the DOM API only (never innerHTML), so text from
// the network can never become markup.

export const $ = (id) => document.getElementById(id);

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) el.append(child);
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An icon from the sprite in index.html. */
export function icon(name, cls = '') {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('aria-hidden', 'true');
  if (cls) svg.setAttribute('class', cls);
  const use = document.createElementNS(SVG, 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
}

/**
 * Make `parent`'s children exactly `rows` (each `{key, sig, build}`), reusing an element whose
 * key and signature are unchanged. Images and focus inside unchanged rows survive updates.
 */
export function reconcile(parent, rows) {
  const old = new Map(); // elements not yet placed stay at or after `cursor`, and go at the end
  for (const el of parent.children) old.set(el.dataset.key, el);
  let cursor = parent.firstElementChild;
  for (const row of rows) {
    let el = old.get(row.key);
    if (el && el.dataset.sig !== row.sig) el = undefined;
    if (!el) {
      el = row.build();
      el.dataset.key = row.key;
      el.dataset.sig = row.sig;
    }
    old.delete(row.key);
    if (el === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(el, cursor);
  }
  while (cursor) {
    const next = cursor.nextElementSibling;
    cursor.remove();
    cursor = next;
  }
}
