// ui.js — small DOM helpers shared by the views: element builder, toasts,
// accessible modals (focus trap, Escape, focus restored), confirmation,
// number/date formatting and the event-family colours.
//
// Everything that shows data from the server goes through textContent (never
// innerHTML): webhook names, URLs, errors and response bodies are written by
// other people and must not become markup.

import { t, lang } from './i18n.js';

/**
 * h builds an element: h('button', {class: 'btn', onclick: fn}, 'Label').
 * Attributes starting with "on" become listeners; true/false toggle boolean
 * attributes; null/undefined are skipped. Children may be strings, nodes,
 * arrays or null.
 */
export function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.setAttribute('class', v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'value' && 'value' in el && !tag.startsWith('svg:')) {
      el.value = v;
    } else if (k === 'checked' || k === 'selected') {
      el[k] = !!v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  appendAll(el, children);
  return el;
}

/** append adds children to el, skipping null/false (unlike Element.append). */
export function append(el, ...children) {
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) appendAll(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** clear empties an element. */
export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let uid = 0;
/** newId returns a unique element id with the given prefix. */
export function newId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

// --- toasts ---

/**
 * toast shows a short message in the corner. kind is "success", "error" or
 * "info". Errors use role=alert so screen readers announce them at once;
 * the others are read politely through the region's aria-live.
 */
export function toast(message, kind = 'info', timeoutMs = 7000) {
  const box = document.getElementById('toasts');
  const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': t('close') }, '×');
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, message), close);
  const remove = () => {
    el.classList.add('leaving');
    setTimeout(() => el.remove(), 200);
  };
  close.addEventListener('click', remove);
  el.addEventListener('click', remove);
  // Toasts sit over the top bar, not over the page's content; two at most,
  // so that they never grow down over the buttons below.
  while (box.children.length >= 2) box.firstElementChild.remove();
  box.append(el);
  if (timeoutMs > 0) setTimeout(remove, timeoutMs);
  return el;
}

// --- modals ---

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

function focusables(root) {
  return [...root.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null || el === document.activeElement);
}

/**
 * openModal shows a native <dialog> as a modal. The browser makes the page
 * behind it inert; on top of that Tab and Shift+Tab wrap inside the dialog
 * (so focus never escapes to the browser's own UI either), Escape closes it,
 * and focus goes back to what had it before. Returns {dialog, body, close}.
 *
 * opts: {title, className, onClose, initialFocus (selector), beforeClose}.
 * beforeClose, when given, runs before the user closes the modal (×,
 * Escape, or a button calling requestClose) and may return false (or a
 * promise of false) to keep it open: the secret not copied yet, a form
 * half filled. close() itself always closes.
 */
export function openModal(opts) {
  const opener = document.activeElement;
  const titleId = newId('modal-title');
  const closeBtn = h('button', { type: 'button', class: 'modal-close', 'aria-label': t('close') }, '×');
  const title = h('h2', { id: titleId, class: 'modal-title' }, opts.title);
  const body = h('div', { class: 'modal-body' });
  const dialog = h('dialog', { class: 'modal ' + (opts.className || ''), 'aria-labelledby': titleId },
    h('div', { class: 'modal-head' }, title, closeBtn), body);
  let closed = false;
  const close = (result) => {
    if (closed) return;
    closed = true;
    dialog.close();
    dialog.remove();
    if (opener && typeof opener.focus === 'function' && document.contains(opener)) opener.focus();
    if (opts.onClose) opts.onClose(result);
  };
  let asking = false;
  const requestClose = async (result) => {
    if (closed || asking) return;
    if (opts.beforeClose) {
      asking = true;
      let ok;
      try {
        ok = await opts.beforeClose();
      } finally {
        asking = false;
      }
      if (ok === false) return;
    }
    close(result);
  };
  closeBtn.addEventListener('click', () => requestClose());
  // Escape fires "cancel" on a modal dialog; we close ourselves so that
  // onClose runs and focus is restored.
  dialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    if (e.target === dialog) requestClose();
  });
  dialog.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      requestClose();
      return;
    }
    if (e.key !== 'Tab') return;
    const items = focusables(dialog);
    if (items.length === 0) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (e.shiftKey && (document.activeElement === first || !dialog.contains(document.activeElement))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (document.activeElement === last || !dialog.contains(document.activeElement))) {
      e.preventDefault();
      first.focus();
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  const setTitle = (text) => { title.textContent = text; };
  const focusFirst = () => {
    const target = (opts.initialFocus && dialog.querySelector(opts.initialFocus)) || focusables(body)[0] || closeBtn;
    target.focus();
  };
  return { dialog, body, close, requestClose, setTitle, focusFirst };
}

/**
 * confirmDialog asks a yes/no question in a modal and resolves to true when
 * confirmed. The safe choice (Cancel) has the focus first.
 */
export function confirmDialog({ title, message, confirmLabel, cancelLabel, danger = true }) {
  return new Promise((resolve) => {
    let answer = false;
    const m = openModal({ title, className: 'modal-sm confirm-modal', onClose: () => resolve(answer) });
    const cancel = h('button', { type: 'button', class: 'btn', id: 'confirm-cancel' }, cancelLabel || t('cancel'));
    const ok = h('button', { type: 'button', class: 'btn ' + (danger ? 'btn-danger' : 'btn-primary'), id: 'confirm-ok' }, confirmLabel);
    cancel.addEventListener('click', () => m.close());
    ok.addEventListener('click', () => {
      answer = true;
      m.close();
    });
    m.body.append(h('p', { class: 'confirm-message' }, message), h('div', { class: 'modal-actions' }, cancel, ok));
    cancel.focus();
  });
}

// --- formatting (follows the console language, not the OS) ---

export function fmtNumber(n, maxDigits = 0) {
  if (n === null || n === undefined) return '—';
  return new Intl.NumberFormat(lang(), { maximumFractionDigits: maxDigits }).format(n);
}

/** fmtPercent formats a 0–1 ratio; null (nothing finished yet) is a dash. */
export function fmtPercent(r) {
  if (r === null || r === undefined) return '—';
  return new Intl.NumberFormat(lang(), { style: 'percent', maximumFractionDigits: 1 }).format(r);
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  return t('unit.ms', { n: fmtNumber(ms) });
}

export function fmtDate(iso) {
  if (!iso) return '—';
  return new Intl.DateTimeFormat(lang(), { dateStyle: 'short', timeStyle: 'medium' }).format(new Date(iso));
}

/** fmtRelative says "3 min ago" / "il y a 3 min". */
export function fmtRelative(iso) {
  if (!iso) return '—';
  const s = (new Date(iso).getTime() - Date.now()) / 1000;
  const rtf = new Intl.RelativeTimeFormat(lang(), { numeric: 'auto', style: 'short' });
  const abs = Math.abs(s);
  if (abs < 60) return rtf.format(Math.round(s), 'second');
  if (abs < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (abs < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

// --- event badges ---

// Known families get fixed colours so the brief's events always look the
// same; any other family gets one of the palette slots by a stable hash, so
// one family keeps one colour everywhere on the page.
const KNOWN_FAMILIES = { thread: 0, message: 1, analysis: 2, concept: 3, webhook: 4, relay: 5 };
const PALETTE_SIZE = 8;

export function eventFamily(pattern) {
  if (pattern === '*') return '*';
  return pattern.split('.')[0];
}

export function familySlot(family) {
  if (family === '*') return 'all';
  if (family in KNOWN_FAMILIES) return String(KNOWN_FAMILIES[family]);
  let hash = 0;
  for (const ch of family) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return String(6 + (hash % (PALETTE_SIZE - 6)));
}

/** badge renders one event type or pattern as a coloured pill. */
export function eventBadge(pattern) {
  const fam = eventFamily(pattern);
  return h('span', { class: `badge fam-${familySlot(fam)}`, 'data-family': fam }, pattern === '*' ? t('events.all') : pattern);
}

/** statusBadge renders a delivery status. */
export function statusBadge(status) {
  return h('span', { class: `status status-${status}` }, t('status.' + status));
}

/** ellipsize shortens text written by others (a webhook's name) for a
 * message, so that a 200-character name does not make a toast tall. */
export function ellipsize(s, max = 32) {
  const chars = [...String(s)];
  return chars.length <= max ? chars.join('') : chars.slice(0, max - 1).join('') + '…';
}

/** truncateURL keeps the scheme, host and both ends of the path. */
export function truncateURL(url, max = 38) {
  if (url.length <= max) return url;
  let head = url;
  try {
    const u = new URL(url);
    head = u.origin + u.pathname + u.search;
  } catch {
    // keep as is
  }
  const keepEnd = 10;
  return head.slice(0, max - keepEnd - 1) + '…' + head.slice(-keepEnd);
}

/** setBusy disables a button while a request runs and shows a spinner. */
export async function withBusy(button, fn) {
  button.disabled = true;
  button.classList.add('busy');
  button.setAttribute('aria-busy', 'true');
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.classList.remove('busy');
    button.removeAttribute('aria-busy');
  }
}
