// deliveries.js — the delivery log: filters (status, period, webhook, event
// type), rows that expand to their attempts and response excerpt, Redeliver,
// and polling so new deliveries and attempts appear without a reload.
//
// Polling (every few seconds, only while this view is shown and the tab is
// visible) is simpler and sturdier than a push channel here: the admin API
// is plain request/response, and a missed poll costs nothing.

import { api, ApiError } from './api.js';
import { t } from './i18n.js';
import { clear, ellipsize, fmtDate, fmtMs, fmtRelative, h, statusBadge, toast, withBusy } from './ui.js';

export const POLL_MS = 3000;
const PAGE = 50;

let section = null;
let filters = null;
let rows = [];          // deliveries shown, newest first
let nextCursor = null;
let expanded = new Map(); // id → attempts count when its detail was fetched
let known = new Set();    // ids seen, to highlight new ones
let timer = null;
let seq = 0;

export function mount(el, params) {
  section = el;
  filters = {
    status: params.get('status') || '',
    days: params.get('days') || '7',
    webhook_id: params.get('webhook') || '',
    event_type: params.get('event') || '',
  };
  rows = [];
  nextCursor = null;
  expanded = new Map();
  known = new Set();
  render();
  refresh(true);
  document.addEventListener('visibilitychange', onVisibility);
  schedule();
}

export function unmount() {
  section = null;
  clearTimeout(timer);
  timer = null;
  document.removeEventListener('visibilitychange', onVisibility);
}

function onVisibility() {
  if (document.visibilityState === 'visible' && section) refresh(false);
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    if (!section) return;
    if (document.visibilityState === 'visible') await refresh(false);
    if (section) schedule();
  }, POLL_MS);
}

/** params turns the filters into the query of GET /api/deliveries. */
function params(limit, cursor) {
  return { ...filters, limit, cursor };
}

/**
 * refresh reloads what is shown. reset starts over (filters changed);
 * otherwise it is a poll: it asks for as many rows as are shown so that
 * "Load more" pages stay, and re-fetches the open rows whose attempts
 * changed.
 */
async function refresh(reset, showNew) {
  const mySeq = ++seq;
  const limit = reset ? PAGE : Math.min(500, Math.max(PAGE, rows.length + (showNew ? waitingCount : 0)));
  let res;
  try {
    res = await api.listDeliveries(params(limit));
  } catch (e) {
    if (mySeq !== seq || !section) return;
    if (reset || rows.length === 0) showError(e);
    return;
  }
  if (mySeq !== seq || !section) return;
  // New deliveries go on top. While someone reads the list (scrolled down,
  // a row open, focus or a selection in it), inserting them would move
  // what they read: the rows shown are updated in place instead, and a
  // button says how many new ones wait.
  if (!reset && !showNew && rows.length > 0 && readerBusy()) {
    const newest = rows[0].id;
    const waiting = res.deliveries.filter((d) => d.id > newest).length;
    if (waiting > 0) {
      const byId = new Map(res.deliveries.map((d) => [d.id, d]));
      rows = rows.map((r) => byId.get(r.id) || r);
      const body = document.getElementById('deliveries-body');
      if (body) patchRows(body);
      showWaiting(waiting);
      for (const d of rows) {
        if (expanded.has(d.id) && expanded.get(d.id) !== d.attempts) loadDetail(d.id);
      }
      return;
    }
  }
  showWaiting(0);
  const first = reset || known.size === 0;
  const fresh = new Set();
  for (const d of res.deliveries) {
    if (!first && !known.has(d.id)) fresh.add(d.id);
    known.add(d.id);
  }
  const changed = [];
  for (const d of res.deliveries) {
    if (expanded.has(d.id) && expanded.get(d.id) !== d.attempts) changed.push(d.id);
  }
  // The same answer again (a filter applied twice, by change and by
  // Enter): nothing to redraw, and the open rows stay open.
  const unchanged = reset && res.deliveries.length === shownKeys.length && (res.next_cursor || null) === (nextCursor || null) &&
    res.deliveries.every((d, i) => rowKey(d) === shownKeys[i]) && !!document.getElementById('deliveries-table');
  rows = res.deliveries;
  nextCursor = res.next_cursor;
  if (unchanged) return;
  if (reset) expanded = new Map();
  renderRows(fresh, reset);
  for (const id of changed) loadDetail(id);
}

/**
 * readerBusy tells whether new rows on top would move what the user is
 * reading: the page is scrolled, a row is open, or focus or a text
 * selection is inside the list.
 */
function readerBusy() {
  const body = document.getElementById('deliveries-body');
  if (!body) return false;
  if (window.scrollY > 40 || expanded.size > 0) return true;
  if (body.contains(document.activeElement)) return true;
  const sel = window.getSelection();
  return !!(sel && !sel.isCollapsed && sel.anchorNode && body.contains(sel.anchorNode));
}

let waitingCount = 0;

/** showWaiting shows (n > 0) or hides the "n new deliveries" button. */
function showWaiting(n) {
  waitingCount = n;
  const btn = document.getElementById('deliveries-new');
  if (!btn) return;
  btn.hidden = n === 0;
  btn.textContent = n === 0 ? '' : t('deliveries.newWaiting', { n });
}

async function loadMore(btn) {
  if (!nextCursor) return;
  await withBusy(btn, async () => {
    try {
      const res = await api.listDeliveries(params(PAGE, nextCursor));
      for (const d of res.deliveries) known.add(d.id);
      rows = rows.concat(res.deliveries.filter((d) => !rows.some((r) => r.id === d.id)));
      nextCursor = res.next_cursor;
      renderRows(new Set(), true);
    } catch (e) {
      toast(t('error.load', { reason: e.message }), 'error');
    }
  });
}

// --- layout ---

function render() {
  clear(section);
  const status = h('select', { id: 'f-status', name: 'status' },
    h('option', { value: '' }, t('filter.any')),
    ['pending', 'delivering', 'succeeded', 'failed', 'skipped'].map((s) => h('option', { value: s, selected: filters.status === s }, t('status.' + s))));
  const days = h('select', { id: 'f-days', name: 'days' },
    [['1', 'filter.day1'], ['7', 'filter.days7'], ['30', 'filter.days30'], ['90', 'filter.days90']]
      .map(([v, k]) => h('option', { value: v, selected: filters.days === v }, t(k))));
  const webhook = h('select', { id: 'f-webhook', name: 'webhook' }, h('option', { value: '' }, t('filter.any')));
  const eventType = h('input', { id: 'f-event', name: 'event', value: filters.event_type, placeholder: 'thread.*', list: 'f-event-types', autocomplete: 'off', spellcheck: 'false' });
  const typesList = h('datalist', { id: 'f-event-types' });
  const reset = h('button', { type: 'button', class: 'btn btn-small btn-ghost', id: 'f-reset' }, t('filter.reset'));
  const form = h('form', { class: 'filters', id: 'delivery-filters', role: 'search', 'aria-label': t('deliveries.title') },
    filterField('f-status', t('filter.status'), status),
    filterField('f-days', t('filter.days'), days),
    filterField('f-webhook', t('filter.webhook'), webhook),
    filterField('f-event', t('filter.eventType'), eventType, typesList),
    h('div', { class: 'filter filter-reset' }, reset));
  const waiting = h('button', { type: 'button', class: 'btn btn-small new-waiting', id: 'deliveries-new', hidden: true, 'aria-live': 'polite' });
  waiting.addEventListener('click', async () => {
    await refresh(false, true);
    window.scrollTo({ top: 0 });
    const title = document.getElementById('deliveries-title');
    if (title) {
      title.tabIndex = -1;
      title.focus();
    }
  });
  section.append(
    h('div', { class: 'view-head' },
      h('h1', { id: 'deliveries-title' }, t('deliveries.title')),
      h('p', { class: 'muted live-note' }, h('span', { class: 'live-dot', 'aria-hidden': 'true' }), t('deliveries.live'))),
    form,
    h('div', { class: 'new-waiting-bar' }, waiting),
    h('div', { id: 'deliveries-body', 'aria-live': 'off' }, h('p', { class: 'muted' }, t('loading'))));

  const apply = () => {
    filters = { status: status.value, days: days.value, webhook_id: webhook.value, event_type: eventType.value.trim() };
    // Keep the filters in the address so the view can be bookmarked or
    // linked to (the Stats tab links here with ?webhook=ID). replaceState
    // does not fire hashchange, so the view is not remounted.
    const q = new URLSearchParams();
    if (filters.status) q.set('status', filters.status);
    if (filters.days !== '7') q.set('days', filters.days);
    if (filters.webhook_id) q.set('webhook', filters.webhook_id);
    if (filters.event_type) q.set('event', filters.event_type);
    const qs = q.toString();
    history.replaceState(null, '', '#/deliveries' + (qs ? '?' + qs : ''));
    refresh(true);
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    apply();
  });
  status.addEventListener('change', apply);
  days.addEventListener('change', apply);
  webhook.addEventListener('change', apply);
  eventType.addEventListener('change', apply);
  reset.addEventListener('click', () => {
    status.value = '';
    days.value = '7';
    webhook.value = '';
    eventType.value = '';
    apply();
  });

  // Options for the webhook and event type filters.
  api.listWebhooks().then((list) => {
    for (const w of list) webhook.append(h('option', { value: String(w.id), selected: filters.webhook_id === String(w.id) }, w.name));
  }).catch(() => {});
  api.eventTypes().then((r) => {
    for (const ty of r.event_types || []) typesList.append(h('option', { value: ty }));
  }).catch(() => {});
}

function filterField(id, label, control, extra) {
  return h('div', { class: 'filter' }, h('label', { for: id }, label), control, extra || null);
}

function showError(e) {
  const body = document.getElementById('deliveries-body');
  if (!body) return;
  const field = e instanceof ApiError && e.field ? ` (${e.field})` : '';
  clear(body).append(h('p', { class: 'error-box', role: 'alert' }, t('error.load', { reason: e.message + field })));
}

/** rowKey is what a row shows: when it is unchanged the row is kept. */
function rowKey(d) {
  return [d.id, d.status, d.attempts, d.last_status_code, d.last_error, d.last_duration_ms, d.webhook_name].join('|');
}

let shownKeys = [];

/**
 * patchRows updates a poll's answer in place when the list holds the same
 * deliveries in the same order: only the rows whose content changed are
 * replaced. Rebuilding the whole table every few seconds would reset hover
 * states, move what the user is about to click, and churn the DOM for
 * nothing. Returns false when a full redraw is needed.
 */
function patchRows(body) {
  const table = body.querySelector('#deliveries-table');
  if (!table || rows.length !== shownKeys.length || rows.some((d, i) => String(d.id) !== shownKeys[i].split('|')[0])) return false;
  rows.forEach((d, i) => {
    const key = rowKey(d);
    if (key === shownKeys[i]) return;
    const old = table.querySelector(`tr.delivery-row[data-id="${d.id}"]`);
    if (!old) return;
    const focusKey = old.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
    const tr = deliveryRow(d, false);
    old.replaceWith(tr);
    const again = focusKey && tr.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  });
  shownKeys = rows.map(rowKey);
  const count = document.getElementById('deliveries-count');
  if (count) count.textContent = t('deliveries.count', { n: rows.length });
  return true;
}

function renderRows(fresh, full) {
  const body = document.getElementById('deliveries-body');
  if (!body) return;
  if (!full && fresh.size === 0 && patchRows(body)) return;
  shownKeys = rows.map(rowKey);
  // Keep focus where it was across a redraw (a poll must not steal it).
  const active = document.activeElement;
  const focusKey = active && body.contains(active) ? active.dataset.focusKey : null;
  clear(body);
  if (rows.length === 0) {
    body.append(h('p', { class: 'empty', id: 'deliveries-empty' }, t('deliveries.empty')));
    return;
  }
  const tbody = h('tbody', {});
  for (const d of rows) {
    tbody.append(deliveryRow(d, fresh.has(d.id)));
    const detail = h('tr', { class: 'detail-row', id: `detail-${d.id}`, hidden: !expanded.has(d.id) },
      h('td', { colspan: '9' }, h('div', { class: 'detail', id: `detail-body-${d.id}` }, h('p', { class: 'muted' }, t('loading')))));
    tbody.append(detail);
  }
  body.append(
    h('div', { class: 'table-scroll' }, h('table', { class: 'table deliveries-table', id: 'deliveries-table' },
      h('caption', { class: 'sr-only' }, t('deliveries.caption')),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', class: 'col-expand' }, h('span', { class: 'sr-only' }, t('deliveries.attempts'))),
        h('th', { scope: 'col' }, t('col.time')),
        h('th', { scope: 'col' }, t('col.webhook')),
        h('th', { scope: 'col' }, t('col.event')),
        h('th', { scope: 'col' }, t('col.status')),
        h('th', { scope: 'col', class: 'num' }, t('col.attempts')),
        h('th', { scope: 'col', class: 'num' }, t('col.code')),
        h('th', { scope: 'col', class: 'num' }, t('col.duration')),
        h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, t('col.actions'))))),
      tbody)),
    h('div', { class: 'list-foot' },
      h('span', { class: 'muted', id: 'deliveries-count' }, t('deliveries.count', { n: rows.length })),
      nextCursor ? h('button', { type: 'button', class: 'btn', id: 'load-more', onclick: (e) => loadMore(e.currentTarget) }, t('deliveries.more')) : null));
  // Details that were open are refilled from the cache or fetched again.
  for (const id of expanded.keys()) {
    const cached = detailCache.get(id);
    if (cached) fillDetail(id, cached);
    else loadDetail(id);
  }
  if (focusKey) {
    const again = body.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
}

function deliveryRow(d, isNew) {
  const open = expanded.has(d.id);
  const toggle = h('button', {
    type: 'button', class: 'expand', 'aria-expanded': String(open), 'aria-controls': `detail-${d.id}`,
    'aria-label': t('deliveries.expand', { id: d.id }), 'data-focus-key': `expand-${d.id}`,
  }, h('span', { class: 'chev', 'aria-hidden': 'true' }, '▸'));
  toggle.addEventListener('click', () => {
    const tr = document.getElementById(`detail-${d.id}`);
    if (expanded.has(d.id)) {
      expanded.delete(d.id);
      tr.hidden = true;
      toggle.setAttribute('aria-expanded', 'false');
    } else {
      expanded.set(d.id, d.attempts);
      tr.hidden = false;
      toggle.setAttribute('aria-expanded', 'true');
      loadDetail(d.id);
    }
  });
  const canRedeliver = d.status === 'failed' || d.status === 'succeeded' || d.status === 'skipped';
  const redeliver = canRedeliver ? h('button', {
    type: 'button', class: 'btn btn-small', 'data-action': 'redeliver', 'data-focus-key': `redeliver-${d.id}`,
    'aria-label': t('deliveries.redeliverLabel', { id: d.id }),
  }, t('deliveries.redeliver')) : null;
  if (redeliver) redeliver.addEventListener('click', () => doRedeliver(d, redeliver));
  return h('tr', { class: 'delivery-row' + (isNew ? ' is-new' : ''), 'data-id': d.id, 'data-status': d.status, 'data-attempts': d.attempts },
    h('td', { class: 'col-expand' }, toggle),
    h('td', { 'data-label': t('col.time') }, h('time', { datetime: d.created_at, title: fmtDate(d.created_at) }, fmtRelative(d.created_at))),
    h('td', { 'data-label': t('col.webhook'), class: 'cell-webhook' }, d.webhook_name),
    h('td', { 'data-label': t('col.event') }, h('code', {}, d.event_type)),
    h('td', { 'data-label': t('col.status') }, statusBadge(d.status),
      d.last_error && d.status !== 'succeeded' ? h('div', { class: 'error-text small' }, d.last_error) : null),
    h('td', { 'data-label': t('col.attempts'), class: 'num' }, String(d.attempts)),
    h('td', { 'data-label': t('col.code'), class: 'num' }, d.last_status_code ?? '—'),
    h('td', { 'data-label': t('col.duration'), class: 'num' }, fmtMs(d.last_duration_ms)),
    h('td', { class: 'col-actions' }, redeliver));
}

const detailCache = new Map();

async function loadDetail(id) {
  try {
    const d = await api.getDelivery(id);
    detailCache.set(id, d);
    if (expanded.has(id)) expanded.set(id, d.attempts);
    fillDetail(id, d);
  } catch (e) {
    const box = document.getElementById(`detail-body-${id}`);
    if (box) clear(box).append(h('p', { class: 'error-box' }, t('error.load', { reason: e.message })));
  }
}

function fillDetail(id, d) {
  const box = document.getElementById(`detail-body-${id}`);
  if (!box) return;
  const attempts = d.attempt_log || [];
  clear(box).append(
    h('div', { class: 'detail-meta' },
      h('span', {}, t('deliveries.eventId'), ': ', h('code', {}, d.event_id)),
      h('span', {}, h('code', {}, d.url)),
      d.next_attempt_at && (d.status === 'pending' || d.status === 'delivering')
        ? h('span', {}, t('deliveries.nextAttempt', { when: fmtRelative(d.next_attempt_at) })) : null),
    h('h4', {}, t('deliveries.attempts')),
    attempts.length === 0 ? h('p', { class: 'muted' }, t('deliveries.noAttempts')) : h('div', { class: 'table-scroll' },
      h('table', { class: 'table table-compact attempts-table' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, t('col.attempt')),
          h('th', { scope: 'col' }, t('col.time')),
          h('th', { scope: 'col' }, t('col.code')),
          h('th', { scope: 'col' }, t('col.duration')),
          h('th', { scope: 'col' }, t('col.outcome')),
          h('th', { scope: 'col' }, t('col.error')))),
        h('tbody', {}, attempts.map((a) => h('tr', { class: 'attempt-row' },
          h('td', { class: 'num', 'data-label': t('col.attempt') }, String(a.attempt)),
          h('td', { 'data-label': t('col.time') }, fmtDate(a.started_at)),
          h('td', { class: 'num', 'data-label': t('col.code') }, a.status_code ?? '—'),
          h('td', { class: 'num', 'data-label': t('col.duration') }, fmtMs(a.duration_ms)),
          h('td', { 'data-label': t('col.outcome') }, a.outcome || '—'),
          h('td', { class: 'error-text', 'data-label': t('col.error') }, [a.error || '—', a.retry_after ? ` (${t('col.retryAfter')}: ${a.retry_after})` : null])))))),
    h('h4', {}, t('deliveries.response')),
    d.last_response ? h('pre', { class: 'response' }, d.last_response) : h('p', { class: 'muted' }, t('deliveries.noResponse')),
    h('details', { class: 'payload' }, h('summary', {}, t('deliveries.payload')),
      h('pre', { class: 'response' }, JSON.stringify(d.payload, null, 2))));
}

async function doRedeliver(d, btn) {
  await withBusy(btn, async () => {
    try {
      await api.redeliver(d.id);
      toast(t('deliveries.redelivered', { id: d.id, name: ellipsize(d.webhook_name) }), 'success');
    } catch (e) {
      toast(t('error.generic', { reason: e.message }), 'error');
    }
  });
  refresh(false);
}
