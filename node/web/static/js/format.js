// Pure formatting helpers (no DOM, no state).

const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const weekday = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const shortDate = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const longDate = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
const fullDate = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' });

const DAY = 86_400_000;

function startOfDay(d) {
  const c = new Date(d);
  c.setHours(0, 0, 0, 0);
  return c.getTime();
}

export function clockTime(iso) {
  return time.format(new Date(iso));
}

/** Chat list stamp: a time today, a weekday this week, a date before. */
export function listStamp(iso, now = Date.now()) {
  const d = new Date(iso);
  const days = Math.round((startOfDay(now) - startOfDay(d)) / DAY);
  if (days <= 0) return time.format(d);
  if (days < 7) return weekday.format(d);
  return shortDate.format(d);
}

/** Day separator label in a conversation. */
export function dayLabel(iso, now = Date.now()) {
  const d = new Date(iso);
  const days = Math.round((startOfDay(now) - startOfDay(d)) / DAY);
  if (days <= 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (days < 7) return longDate.format(d);
  return fullDate.format(d);
}

export function dayKey(iso) {
  const d = new Date(iso);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

export function fileSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function initials(name) {
  const parts = String(name || '?').split(/[\s._-]+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[1][0] : String(name || '?').slice(0, 2);
  return letters.toUpperCase();
}

/** One of eight avatar colours, stable for an id. */
export function avatarTone(id) {
  let n = 0;
  for (const ch of String(id)) n = (n * 31 + ch.charCodeAt(0)) >>> 0;
  return `tone-${n % 8}`;
}

const KINDS = {
  'application/pdf': 'PDF',
  'application/zip': 'ZIP',
  'application/octet-stream': 'File',
};

export function fileKind(contentType) {
  if (KINDS[contentType]) return KINDS[contentType];
  const [major, minor] = String(contentType).split('/');
  if (['image', 'audio', 'video'].includes(major)) return `${major[0].toUpperCase()}${major.slice(1)} (${(minor || '').toUpperCase()})`;
  return 'File';
}

export function extensionFor(contentType) {
  const minor = String(contentType).split('/')[1] || 'bin';
  const ext = { jpeg: 'jpg', 'octet-stream': 'bin', 'svg+xml': 'svg', quicktime: 'mov', mpeg: 'mp3' }[minor];
  return ext || minor.replace(/[^a-z0-9]/g, '') || 'bin';
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

/** Split text into plain and link pieces: [{text}, {href, text}, ...]. Only http(s) links. */
export function linkify(text) {
  const out = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    if (match.index > last) out.push({ text: text.slice(last, match.index) });
    out.push({ href: match[0], text: match[0] });
    last = match.index + match[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last) });
  return out;
}

/** A random id for client_msg_id and device ids (crypto.randomUUID needs a secure context). */
export function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID().replaceAll('-', '');
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
