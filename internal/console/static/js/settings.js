// settings.js — the operator's settings panel (GET/PUT /api/settings):
// pause/resume, absence days, the global delivery window with its time
// zone, the alert threshold, the disable delay, retention and allow_http.
// Owner tokens never see it (the route answers 403 to them, and the nav
// link is hidden).

import { api, ApiError } from './api.js';
import { t } from './i18n.js';
import { applySettings } from './state.js';
import { clear, fmtDate, h, toast, withBusy } from './ui.js';

const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'];
const DAY = 86400;
const HOUR = 3600;

let section = null;

export async function mount(el) {
  section = el;
  clear(section).append(
    h('div', { class: 'view-head' }, h('h1', { id: 'settings-title' }, t('settings.title'))),
    h('p', { class: 'muted' }, t('loading')));
  try {
    const s = await api.getSettings();
    if (section === el) render(s);
  } catch (e) {
    if (section === el) section.append(h('p', { class: 'error-box', role: 'alert' }, t('error.load', { reason: e.message })));
  }
}

export function unmount() {
  section = null;
}

/** timeZones lists the zones the browser knows, for the datalist. */
function timeZones() {
  try {
    return Intl.supportedValuesOf('timeZone');
  } catch {
    return ['UTC', 'Europe/Paris'];
  }
}

function render(s) {
  applySettings(s);
  clear(section);

  // --- pause / resume: immediate actions, not part of the form ---
  const reason = h('input', { id: 'pause-reason', autocomplete: 'off', value: '' });
  const pauseBtn = h('button', { type: 'button', class: 'btn ' + (s.paused ? 'btn-primary' : 'btn-warn'), id: 'pause-toggle' },
    s.paused ? t('settings.resumeBtn') : t('settings.pauseBtn'));
  pauseBtn.addEventListener('click', () => withBusy(pauseBtn, async () => {
    const body = s.paused ? { paused: false } : { paused: true, paused_reason: reason.value.trim() || null };
    if (body.paused_reason === null) delete body.paused_reason;
    try {
      const next = await api.putSettings(body);
      toast(next.paused ? t('settings.pausedToast') : t('settings.resumedToast'), 'success');
      render(next);
      const again = document.getElementById('pause-toggle');
      if (again) again.focus();
    } catch (e) {
      toast(t('error.generic', { reason: e.message }), 'error');
    }
  }));
  const pauseBox = h('section', { class: 'card settings-card', 'aria-labelledby': 'pause-title' },
    h('h2', { id: 'pause-title' }, t('settings.pause')),
    h('p', { class: s.paused ? 'state state-paused' : 'state state-running', id: 'pause-state' },
      s.paused ? t('settings.pausedSince', { when: fmtDate(s.paused_at) }) + (s.paused_reason ? ` — ${s.paused_reason}` : '') : t('settings.running')),
    s.paused ? null : h('div', { class: 'field' }, h('label', { for: 'pause-reason' }, t('settings.pauseReason')), reason),
    h('div', { class: 'actions' }, pauseBtn));

  // --- the form ---
  const form = h('form', { id: 'settings-form', class: 'settings-form', novalidate: true });
  const err = (name) => h('p', { class: 'field-error', id: `s-${name}-error` });

  const days = h('fieldset', { class: 'card settings-card fieldset', 'aria-describedby': 's-absence-hint s-absence_days-error' },
    h('legend', {}, t('settings.absence')),
    h('p', { class: 'hint', id: 's-absence-hint' }, t('settings.absenceHint')),
    h('div', { class: 'checks weekdays' }, WEEKDAYS.map((d) => {
      const id = `s-day-${d}`;
      return h('label', { class: 'check', for: id },
        h('input', { type: 'checkbox', id, name: 'absence_days', value: d, checked: s.absence_days.includes(d) }), ' ', t('weekday.' + d));
    })),
    err('absence_days'));

  const w = s.window;
  const windowOn = h('input', { type: 'checkbox', id: 's-window-on', checked: !!w });
  const start = h('input', { type: 'time', id: 's-window-start', value: w ? w.start : '22:00', 'aria-describedby': 's-window-error' });
  const end = h('input', { type: 'time', id: 's-window-end', value: w ? w.end : '07:00', 'aria-describedby': 's-window-error' });
  const tzList = h('datalist', { id: 's-tz-list' }, timeZones().map((z) => h('option', { value: z })));
  const tz = h('input', {
    id: 's-window-tz', list: 's-tz-list', autocomplete: 'off', spellcheck: 'false',
    value: w ? w.time_zone : Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC', 'aria-describedby': 's-window-error',
  });
  const windowFields = h('div', { class: 'window-fields', hidden: !w },
    h('div', { class: 'field' }, h('label', { for: 's-window-start' }, t('settings.windowStart')), start),
    h('div', { class: 'field' }, h('label', { for: 's-window-end' }, t('settings.windowEnd')), end),
    h('div', { class: 'field field-wide' }, h('label', { for: 's-window-tz' }, t('settings.timeZone')), tz, tzList));
  windowOn.addEventListener('change', () => { windowFields.hidden = !windowOn.checked; });
  const windowBox = h('fieldset', { class: 'card settings-card fieldset', 'aria-describedby': 's-window-hint s-window-error' },
    h('legend', {}, t('settings.window')),
    h('label', { class: 'check', for: 's-window-on' }, windowOn, ' ', t('settings.windowOn')),
    h('p', { class: 'hint', id: 's-window-hint' }, t('settings.windowHint')),
    windowFields,
    err('window'));

  const num = (id, value, attrs) => h('input', { type: 'number', id, value: String(value), inputmode: 'decimal', ...attrs });
  const threshold = num('s-threshold', s.failure_alert_threshold, { min: '1', step: '1', 'aria-describedby': 's-failure_alert_threshold-error' });
  const disableAfter = num('s-disable-after', round(s.disable_after_seconds / HOUR), { min: '1', step: 'any', 'aria-describedby': 's-disable_after_seconds-error' });
  const retention = num('s-retention', round(s.retention_seconds / DAY), { min: '1', step: 'any', 'aria-describedby': 's-retention_seconds-error' });
  const allowHTTP = h('input', { type: 'checkbox', id: 's-allow-http', checked: s.allow_http });
  const alertsBox = h('fieldset', { class: 'card settings-card fieldset' },
    h('legend', {}, t('settings.alerts')),
    h('div', { class: 'field' }, h('label', { for: 's-threshold' }, t('settings.threshold')), threshold, err('failure_alert_threshold')),
    h('div', { class: 'field' }, h('label', { for: 's-disable-after' }, t('settings.disableAfter')), disableAfter, err('disable_after_seconds')),
    h('div', { class: 'field' }, h('label', { for: 's-retention' }, t('settings.retention')), retention, err('retention_seconds')),
    h('label', { class: 'check', for: 's-allow-http' }, allowHTTP, ' ', t('settings.allowHTTP')),
    err('allow_http'));

  const formErr = h('p', { class: 'form-error', id: 's-form-error', role: 'alert' });
  const save = h('button', { type: 'submit', class: 'btn btn-primary', id: 'settings-save' }, t('save'));
  form.append(days, windowBox, alertsBox, formErr, h('div', { class: 'actions' }, save));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    formErr.textContent = '';
    const body = {
      absence_days: [...form.querySelectorAll('input[name="absence_days"]:checked')].map((c) => c.value),
      window: windowOn.checked ? { start: start.value, end: end.value, time_zone: tz.value.trim() } : null,
      failure_alert_threshold: Number(threshold.value),
      disable_after_seconds: Math.round(Number(disableAfter.value) * HOUR),
      retention_seconds: Math.round(Number(retention.value) * DAY),
      allow_http: allowHTTP.checked,
    };
    withBusy(save, async () => {
      try {
        const next = await api.putSettings(body);
        toast(t('settings.saved'), 'success');
        render(next);
      } catch (e2) {
        showError(e2, form, formErr);
      }
    });
  });

  section.append(
    h('div', { class: 'view-head' }, h('h1', { id: 'settings-title' }, t('settings.title'))),
    h('p', { class: 'muted' }, t('settings.intro')),
    pauseBox, form);
}

function round(x) {
  return Math.round(x * 100) / 100;
}

/** showError puts a validation error next to the field the API names. */
function showError(e, form, formErr) {
  if (e instanceof ApiError && e.field) {
    // window.start, window.end and window.time_zone share the window box.
    const key = e.field.startsWith('window') ? 'window' : e.field;
    const el = form.querySelector(`#s-${CSS.escape(key)}-error`);
    if (el) {
      el.textContent = e.message;
      const control = form.querySelector(`[aria-describedby~="s-${key}-error"]`);
      if (control && typeof control.focus === 'function') control.focus();
      return;
    }
  }
  formErr.textContent = t('error.generic', { reason: e.message });
}
