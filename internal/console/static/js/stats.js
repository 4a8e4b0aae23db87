// stats.js — the Stats tab of one webhook: figures over 24 hours and 7 days,
// a chart of deliveries per hour by outcome (an SVG drawn here, no chart
// library) and the latest attempts.
//
// Sources, all existing API routes:
//   GET /api/webhooks/{id}         → stats over 24 h (deliveries, success rate, p50/p95)
//   GET /api/stats?days=7&webhook_id
//                                  → the same figures over 7 days, and the
//                                    deliveries per hour of the last 24 h,
//                                    counted by the server (however many
//                                    there are)
//   GET /api/deliveries?webhook_id → the latest deliveries with their last
//                                    attempt's code, duration and error.

import { api } from './api.js';
import { lang, t } from './i18n.js';
import { clear, fmtDate, fmtMs, fmtNumber, fmtPercent, h, statusBadge } from './ui.js';

export async function renderStats(panel, webhook, closeModal) {
  clear(panel).append(h('p', { class: 'muted', 'aria-busy': 'true' }, t('loading')));
  let detail, week, recent;
  try {
    [detail, week, recent] = await Promise.all([
      api.getWebhook(webhook.id),
      api.stats({ days: 7, webhook_id: webhook.id }),
      api.listDeliveries({ webhook_id: webhook.id, days: 1, limit: 50 }),
    ]);
  } catch (e) {
    clear(panel).append(h('p', { class: 'error-box', role: 'alert' }, t('error.load', { reason: e.message })));
    return;
  }
  const s24 = detail.stats || {};
  const s7 = (week.webhooks || []).find((x) => x.webhook_id === webhook.id) || {};
  clear(panel).append(
    h('div', { class: 'stat-groups', id: 'stats-figures' },
      group('24h', t('stats.h24'), {
        deliveries: s24.deliveries_24h, success: s24.success_rate_24h, p50: s24.p50_ms, p95: s24.p95_ms,
      }),
      group('7d', t('stats.d7'), {
        deliveries: s7.deliveries, success: s7.success_rate, p50: s7.p50_duration_ms, p95: s7.p95_duration_ms,
      })),
    chart(week.hourly || []),
    latest(recent.deliveries || [], webhook, closeModal),
  );
}

function group(period, title, v) {
  const item = (kind, label, raw, text) => h('div', {
    class: 'stat', 'data-stat': `${period}-${kind}`,
    // The raw API value, so tests (and curious users) can compare exactly.
    'data-value': raw === null || raw === undefined ? '' : String(raw),
  }, h('div', { class: 'stat-value' }, text), h('div', { class: 'stat-label' }, label));
  return h('section', { class: 'stat-group', 'aria-label': title },
    h('h3', {}, title),
    h('div', { class: 'stat-grid' },
      item('deliveries', t('stats.deliveries'), v.deliveries ?? 0, fmtNumber(v.deliveries ?? 0)),
      item('success', t('stats.successRate'), v.success, fmtPercent(v.success)),
      item('p50', t('stats.p50'), v.p50, fmtMs(v.p50)),
      item('p95', t('stats.p95'), v.p95, fmtMs(v.p95))));
}

/** chart draws the server's hourly series ({start, succeeded, failed, pending}, oldest first). */
function chart(hourly) {
  const data = hourly.map((b) => ({ ...b, start: new Date(b.start).getTime() }));
  const max = Math.max(1, ...data.map((b) => b.succeeded + b.failed + b.pending));
  const W = 480;
  const H = 150;
  const top = 8;
  const base = 124; // y of the x axis
  const bw = W / Math.max(1, data.length);
  const hourFmt = new Intl.DateTimeFormat(lang(), { hour: '2-digit', minute: '2-digit' });
  const svg = h('svg:svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', id: 'stats-chart',
    'aria-label': t('stats.chart'), preserveAspectRatio: 'none',
  });
  // Gridlines at full scale, and at half scale when that is a whole number.
  for (const f of max % 2 === 0 ? [0.5, 1] : [1]) {
    const y = base - (base - top) * f;
    svg.append(h('svg:line', { x1: 0, x2: W, y1: y, y2: y, class: 'grid' }));
    svg.append(h('svg:text', { x: 2, y: y + 11, class: 'axis' }, fmtNumber(max * f)));
  }
  svg.append(h('svg:line', { x1: 0, x2: W, y1: base, y2: base, class: 'axis-line' }));
  data.forEach((b, i) => {
    const x = i * bw + 2;
    const g = h('svg:g', { class: 'bar', 'data-hour': new Date(b.start).toISOString() },
      h('svg:title', {}, t('stats.chartBar', { hour: hourFmt.format(b.start), ok: b.succeeded, failed: b.failed, pending: b.pending })));
    let y = base;
    for (const [kind, n] of [['succeeded', b.succeeded], ['failed', b.failed], ['pending', b.pending]]) {
      if (!n) continue;
      const hgt = ((base - top) * n) / max;
      y -= hgt;
      g.append(h('svg:rect', { x, y, width: bw - 4, height: hgt, rx: 2, class: `seg seg-${kind}`, 'data-count': n }));
    }
    svg.append(g);
    if (i % 6 === 0) svg.append(h('svg:text', { x: x, y: H - 8, class: 'axis' }, hourFmt.format(b.start)));
  });
  const total = data.reduce((n, b) => n + b.succeeded + b.failed + b.pending, 0);
  return h('section', { class: 'chart-box', 'aria-label': t('stats.chart') },
    h('h3', {}, t('stats.chart')),
    total === 0 ? h('p', { class: 'muted chart-empty' }, t('stats.chartEmpty')) : null,
    svg,
    h('ul', { class: 'legend' },
      ['succeeded', 'failed', 'pending'].map((k) => h('li', {}, h('span', { class: `swatch seg-${k}`, 'aria-hidden': 'true' }), t('status.' + k)))));
}

function latest(deliveries, webhook, closeModal) {
  // Newest attempt first: a delivery's last attempt ended at completed_at
  // (or, still retrying, before its next attempt; created_at is the bound).
  const when = (d) => new Date(d.completed_at || d.created_at).getTime();
  const rows = deliveries.filter((d) => d.attempts > 0).sort((a, b) => when(b) - when(a)).slice(0, 10);
  const link = h('a', { href: `#/deliveries?webhook=${webhook.id}`, class: 'link' }, t('stats.allDeliveries'));
  link.addEventListener('click', () => closeModal && closeModal());
  const box = h('section', { class: 'latest', 'aria-label': t('stats.latest') }, h('h3', {}, t('stats.latest')));
  if (rows.length === 0) {
    box.append(h('p', { class: 'muted' }, t('stats.latestEmpty')));
    return box;
  }
  box.append(h('div', { class: 'table-scroll' }, h('table', { class: 'table table-compact', id: 'stats-latest' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, t('col.time')),
      h('th', { scope: 'col' }, t('col.event')),
      h('th', { scope: 'col' }, t('col.status')),
      h('th', { scope: 'col' }, t('col.code')),
      h('th', { scope: 'col' }, t('col.duration')),
      h('th', { scope: 'col' }, t('col.error')))),
    h('tbody', {}, rows.map((d) => h('tr', { 'data-id': d.id },
      h('td', { 'data-label': t('col.time') }, fmtDate(d.completed_at || d.created_at)),
      h('td', { 'data-label': t('col.event') }, d.event_type),
      h('td', { 'data-label': t('col.status') }, statusBadge(d.status)),
      h('td', { 'data-label': t('col.code'), class: 'num' }, d.last_status_code ?? '—'),
      h('td', { 'data-label': t('col.duration'), class: 'num' }, fmtMs(d.last_duration_ms)),
      d.last_error ? h('td', { 'data-label': t('col.error'), class: 'error-text' }, d.last_error) : h('td', { 'data-label': t('col.error'), class: 'muted' }, '—')))))));
  box.append(h('p', {}, link));
  return box;
}
