// webhooks.js — the webhooks view: the table (cards on a phone), inline
// rename, the enable toggle, Test, Delete, and the Create | Edit | Stats
// modal with its form.

import { api, ApiError } from './api.js';
import { t } from './i18n.js';
import { session } from './state.js';
import { renderStats } from './stats.js';
import {
  append, clear, confirmDialog, ellipsize, eventBadge, fmtDate, h, newId, openModal, toast, truncateURL, withBusy,
} from './ui.js';

let section = null;
let hooks = [];
let loadSeq = 0;

export function mount(el) {
  section = el;
  clear(section);
  section.append(
    h('div', { class: 'view-head' },
      h('h1', { id: 'webhooks-title' }, t('webhooks.title')),
      h('button', { type: 'button', class: 'btn btn-primary', id: 'new-webhook', onclick: () => openEditor(null) },
        h('span', { 'aria-hidden': 'true' }, '+ '), t('webhooks.new'))),
    h('div', { id: 'webhooks-body', 'aria-busy': 'true' }, h('p', { class: 'muted' }, t('loading'))),
  );
  load();
}

export function unmount() {
  section = null;
}

/** load fetches the list and redraws it; older answers are ignored. */
async function load() {
  const seq = ++loadSeq;
  const body = document.getElementById('webhooks-body');
  try {
    const list = await api.listWebhooks();
    if (seq !== loadSeq || !section) return;
    hooks = list;
    renderList(document.getElementById('webhooks-body'));
  } catch (e) {
    if (seq !== loadSeq || !body) return;
    clear(body).append(h('p', { class: 'error-box', role: 'alert' }, t('error.load', { reason: e.message }), ' ',
      h('button', { type: 'button', class: 'btn btn-small', onclick: load }, t('retry'))));
  }
}

function renderList(body) {
  if (!body) return;
  body.removeAttribute('aria-busy');
  clear(body);
  if (hooks.length === 0) {
    body.append(h('div', { class: 'empty', id: 'webhooks-empty' },
      h('p', {}, t('webhooks.empty')),
      h('button', { type: 'button', class: 'btn btn-primary', onclick: () => openEditor(null) }, t('webhooks.new'))));
    return;
  }
  // One <table>; below the mobile breakpoint CSS turns each row into a
  // card and shows every cell's data-label, so there is one markup to keep
  // accessible instead of two.
  const tbody = h('tbody', {}, hooks.map(row));
  body.append(h('table', { class: 'table webhooks-table', id: 'webhooks-table' },
    h('caption', { class: 'sr-only' }, t('webhooks.caption')),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, t('col.name')),
      h('th', { scope: 'col' }, t('col.url')),
      h('th', { scope: 'col' }, t('col.events')),
      h('th', { scope: 'col' }, t('col.status')),
      h('th', { scope: 'col', class: 'col-actions' }, t('col.actions')))),
    tbody));
}

/** row renders one webhook; it is also used to redraw a row in place. */
function row(w) {
  const tr = h('tr', { class: 'webhook-row', 'data-id': w.id, 'data-enabled': String(w.enabled) },
    nameCell(w), urlCell(w), eventsCell(w), statusCell(w), actionsCell(w));
  return tr;
}

function redrawRow(w) {
  const i = hooks.findIndex((x) => x.id === w.id);
  if (i >= 0) hooks[i] = w;
  const old = section && section.querySelector(`tr.webhook-row[data-id="${w.id}"]`);
  if (old) old.replaceWith(row(w));
}

// --- Name, editable inline ---

function nameCell(w) {
  const td = h('td', { class: 'cell-name', 'data-label': t('col.name') });
  const show = () => {
    clear(td);
    const btn = h('button', {
      type: 'button', class: 'name-edit', title: t('webhook.renameHint'),
      'aria-label': t('webhook.rename', { name: w.name }),
    }, h('span', { class: 'name-text' }, w.name), h('span', { class: 'pencil', 'aria-hidden': 'true' }, '✎'));
    btn.addEventListener('click', () => edit());
    td.append(btn);
    if (session.operator) {
      td.append(h('span', { class: 'owner-tag' }, w.owner === null ? t('owner.operator') : w.owner));
    }
  };
  const edit = () => {
    clear(td);
    const id = newId('rename');
    const errId = id + '-error';
    const input = h('input', {
      id, class: 'name-input', value: w.name, maxlength: '200', 'aria-describedby': errId, autocomplete: 'off',
    });
    const err = h('p', { id: errId, class: 'field-error' });
    td.append(h('label', { for: id, class: 'sr-only' }, t('webhook.nameLabel', { name: w.name })), input, err);
    input.focus();
    input.select();
    let done = false;
    const commit = async () => {
      if (done) return;
      const name = input.value.trim();
      if (name === w.name) {
        done = true;
        show();
        return;
      }
      if (!name) {
        err.textContent = t('err.required');
        input.setAttribute('aria-invalid', 'true');
        return;
      }
      done = true;
      input.disabled = true;
      try {
        const updated = await api.updateWebhook(w.id, { name });
        toast(t('webhook.renamed', { name: ellipsize(updated.name) }), 'success');
        redrawRow(updated);
        const again = section && section.querySelector(`tr.webhook-row[data-id="${w.id}"] .name-edit`);
        if (again) again.focus();
      } catch (e) {
        done = false;
        input.disabled = false;
        err.textContent = e.message;
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      }
    };
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        commit();
      } else if (e.key === 'Escape') {
        e.preventDefault();
        done = true;
        show();
        td.querySelector('.name-edit').focus();
      }
    });
    input.addEventListener('blur', () => commit());
  };
  show();
  return td;
}

// --- URL, truncated with the full URL in a tooltip ---

function urlCell(w) {
  const tipId = newId('url-tip');
  // The tooltip is a real element (role=tooltip) shown on hover and on
  // keyboard focus, unlike a title attribute which keyboards never see.
  return h('td', { class: 'cell-url', 'data-label': t('col.url') },
    h('span', { class: 'url has-tip', tabindex: '0', 'aria-describedby': tipId },
      h('span', { class: 'url-text' }, truncateURL(w.url)),
      h('span', { class: 'tip', role: 'tooltip', id: tipId }, w.url)));
}

function eventsCell(w) {
  return h('td', { class: 'cell-events', 'data-label': t('col.events') },
    h('div', { class: 'badges' }, w.events.map(eventBadge)));
}

// --- Status: the animated toggle, and why a webhook is off ---

function statusCell(w) {
  const id = newId('toggle');
  const input = h('input', {
    type: 'checkbox', role: 'switch', id, class: 'switch-input', checked: w.enabled,
    'aria-label': t('webhook.toggle', { name: w.name }),
  });
  const text = h('span', { class: 'switch-text' }, w.enabled ? t('webhook.enabled') : t('webhook.disabled'));
  const td = h('td', { class: 'cell-status', 'data-label': t('col.status') },
    h('label', { class: 'switch', for: id }, input,
      h('span', { class: 'switch-track', 'aria-hidden': 'true' }, h('span', { class: 'switch-thumb' })), text));
  const health = w.health || {};
  if (!w.enabled && health.disabled_reason) {
    td.append(h('p', { class: 'reason reason-error disabled-reason' }, t('webhook.disabledReason', { reason: health.disabled_reason })));
  } else if (w.enabled && health.consecutive_failures > 0) {
    td.append(h('p', { class: 'reason reason-warn', title: health.last_error ? t('webhook.lastError', { error: health.last_error }) : null },
      t('webhook.failing', { n: health.consecutive_failures })));
  }
  const flow = w.flow || {};
  if (w.enabled && flow.circuit_open) {
    td.append(h('p', { class: 'reason reason-warn flow-state' }, t('flow.circuit')));
  } else if (w.enabled && flow.held_until) {
    td.append(h('p', { class: 'reason reason-warn flow-state' },
      t('flow.held', { at: new Date(flow.held_until).toLocaleTimeString(), reason: flow.hold_reason || '' })));
  }
  input.addEventListener('change', async () => {
    const enabled = input.checked;
    text.textContent = enabled ? t('webhook.enabled') : t('webhook.disabled');
    input.disabled = true;
    try {
      const updated = await api.updateWebhook(w.id, { enabled });
      toast(enabled ? t('webhook.nowEnabled', { name: ellipsize(updated.name) }) : t('webhook.nowDisabled', { name: ellipsize(updated.name) }), 'success', 4000);
      // Let the thumb finish its slide before the row is redrawn.
      setTimeout(() => {
        redrawRow(updated);
        const again = section && section.querySelector(`tr.webhook-row[data-id="${w.id}"] .switch-input`);
        if (again) again.focus();
      }, 220);
    } catch (e) {
      input.checked = !enabled;
      text.textContent = input.checked ? t('webhook.enabled') : t('webhook.disabled');
      input.disabled = false;
      toast(t('error.generic', { reason: e.message }), 'error');
    }
  });
  return td;
}

// --- Actions ---

function actionsCell(w) {
  const edit = h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'edit', 'aria-label': t('action.editLabel', { name: w.name }) }, t('action.edit'));
  const test = h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'test', 'aria-label': t('action.testLabel', { name: w.name }) }, t('action.test'));
  const del = h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-action': 'delete', 'aria-label': t('action.deleteLabel', { name: w.name }) }, t('action.delete'));
  edit.addEventListener('click', () => openEditor(w));
  test.addEventListener('click', () => testWebhook(w, test));
  del.addEventListener('click', () => deleteWebhook(w));
  return h('td', { class: 'cell-actions', 'data-label': t('col.actions') }, h('div', { class: 'actions' }, edit, test, del));
}

async function testWebhook(w, btn) {
  await withBusy(btn, async () => {
    try {
      const r = await api.testWebhook(w.id);
      // A test goes out to a disabled webhook and while relay is paused;
      // real events do not, which the toast says.
      const notes = [];
      if (r.webhook_enabled === false) notes.push(t('test.noteDisabled'));
      if (r.relay_paused) notes.push(t('test.notePaused'));
      const more = notes.length ? ' ' + notes.join(' ') : '';
      if (r.delivered) {
        toast(t('test.sent', { name: ellipsize(w.name), code: r.status_code, ms: r.duration_ms }) + more, notes.length ? 'info' : 'success', notes.length ? 12000 : 7000);
      } else {
        const reason = r.error || t('test.httpStatus', { code: r.status_code });
        toast(t('test.failed', { name: ellipsize(w.name), reason }) + more, 'error', 10000);
      }
    } catch (e) {
      toast(t('test.failed', { name: ellipsize(w.name), reason: e.message }), 'error', 10000);
    }
  });
}

async function deleteWebhook(w) {
  const ok = await confirmDialog({
    title: t('delete.title'),
    message: t('delete.confirm', { name: w.name }),
    confirmLabel: t('delete.ok'),
  });
  if (!ok) return;
  try {
    await api.deleteWebhook(w.id);
    toast(t('delete.done', { name: ellipsize(w.name) }), 'success');
  } catch (e) {
    // 404: someone else deleted it meanwhile; the reload shows the truth.
    if (!(e instanceof ApiError && e.status === 404)) toast(t('error.generic', { reason: e.message }), 'error');
  }
  await load();
  const next = document.getElementById('new-webhook');
  if (next) next.focus();
}

// --- The Create | Edit | Stats modal ---

const TABS = [
  { key: 'create', label: 'tab.create' },
  { key: 'edit', label: 'tab.edit' },
  { key: 'stats', label: 'tab.stats' },
];

/**
 * openEditor opens the modal: on the Create tab for a new webhook (Edit and
 * Stats unlock once it exists), on Edit (or the given tab) for one that
 * exists (Create is then off: it always makes a new webhook).
 */
export function openEditor(existing, startTab) {
  let current = existing;
  let listChanged = false;
  // shownSecret is the secret on screen (after create or rotate), with
  // whether it was copied: closing before that asks first, since it is
  // never shown again.
  let shownSecret = null;
  const first = startTab || (existing ? 'edit' : 'create');
  const m = openModal({
    // Start in the first field of the form, not on the tabs.
    initialFocus: first === 'stats' ? '#wh-tab-stats' : `#${first}-name`,
    title: existing ? t('modal.edit', { name: existing.name }) : t('modal.new'),
    className: 'modal-lg webhook-modal',
    onClose: () => {
      if (listChanged) load();
    },
    beforeClose: () => {
      if (shownSecret && !shownSecret.copied) {
        return confirmDialog({
          title: t('secret.leaveTitle'), message: t('secret.leaveText'),
          confirmLabel: t('secret.leaveOk'), cancelLabel: t('secret.stay'),
        });
      }
      const dirty = [...m.dialog.querySelectorAll('form.webhook-form')].some((f) => f.isDirty && f.isDirty());
      if (dirty) {
        return confirmDialog({
          title: t('form.discardTitle'), message: t('form.discardText'),
          confirmLabel: t('form.discardOk'), cancelLabel: t('form.keepEditing'),
        });
      }
      return true;
    },
  });
  const tabButtons = {};
  const panels = {};
  const rendered = {};
  const tablist = h('div', { role: 'tablist', class: 'tabs', 'aria-label': t('tabs.label') });
  for (const tab of TABS) {
    const btn = h('button', {
      type: 'button', role: 'tab', id: `wh-tab-${tab.key}`, class: 'tab',
      'aria-controls': `wh-panel-${tab.key}`, 'aria-selected': 'false', tabindex: '-1',
    }, t(tab.label));
    btn.addEventListener('click', () => select(tab.key, true));
    tabButtons[tab.key] = btn;
    tablist.append(btn);
    panels[tab.key] = h('div', { role: 'tabpanel', id: `wh-panel-${tab.key}`, class: 'tabpanel', 'aria-labelledby': `wh-tab-${tab.key}`, hidden: true });
  }
  // Arrow keys move between the enabled tabs (WAI-ARIA tabs pattern).
  tablist.addEventListener('keydown', (e) => {
    const keys = TABS.map((x) => x.key).filter((k) => !tabButtons[k].disabled);
    const at = keys.findIndex((k) => tabButtons[k] === document.activeElement);
    if (at < 0) return;
    let next = null;
    if (e.key === 'ArrowRight') next = keys[(at + 1) % keys.length];
    else if (e.key === 'ArrowLeft') next = keys[(at - 1 + keys.length) % keys.length];
    else if (e.key === 'Home') next = keys[0];
    else if (e.key === 'End') next = keys[keys.length - 1];
    if (next) {
      e.preventDefault();
      select(next, true);
    }
  });
  m.body.append(tablist, ...TABS.map((x) => panels[x.key]));

  const lockTabs = () => {
    tabButtons.create.disabled = !!current && !rendered.secret;
    tabButtons.edit.disabled = !current;
    tabButtons.stats.disabled = !current;
  };

  function select(key, focusTab) {
    for (const tab of TABS) {
      const on = tab.key === key;
      tabButtons[tab.key].setAttribute('aria-selected', String(on));
      tabButtons[tab.key].tabIndex = on ? 0 : -1;
      panels[tab.key].hidden = !on;
    }
    if (key === 'create' && !rendered.create) {
      rendered.create = true;
      panels.create.append(webhookForm(null, {
        onCancel: () => m.close(),
        onDone: (created) => {
          // Show the secret in place of the form, once.
          current = created;
          listChanged = true;
          load();
          rendered.secret = true;
          m.setTitle(t('modal.edit', { name: created.name }));
          shownSecret = { copied: false };
          clear(panels.create).append(secretBox(created.secret, () => m.requestClose(), shownSecret,
            { title: t('secret.title'), text: t('secret.text') }));
          lockTabs();
          const copy = panels.create.querySelector('.copy-secret');
          if (copy) copy.focus();
          toast(t('form.created', { name: ellipsize(created.name) }), 'success');
        },
      }));
    }
    if (key === 'edit' && current && rendered.edit !== current) {
      rendered.edit = current;
      clear(panels.edit).append(webhookForm(current, {
        onCancel: () => m.close(),
        onDone: (updated) => {
          current = updated;
          listChanged = true;
          toast(t('form.saved', { name: ellipsize(updated.name) }), 'success');
          m.close();
        },
        onRotated: (res) => {
          // The new secret, once, in place of the form; the old one keeps
          // signing as a second signature for the grace period.
          shownSecret = { copied: false };
          const text = res.grace_seconds > 0
            ? t('rotate.graceText', { when: fmtDate(new Date(Date.now() + res.grace_seconds * 1000).toISOString()) })
            : t('rotate.noGraceText');
          clear(panels.edit).append(secretBox(res.secret, () => m.requestClose(), shownSecret,
            { title: t('rotate.doneTitle'), text: t('secret.text') + ' ' + text }));
          toast(t('rotate.done', { name: ellipsize(current.name) }), 'success');
          const copy = panels.edit.querySelector('.copy-secret');
          if (copy) copy.focus();
        },
      }));
    }
    if (key === 'stats' && current) {
      // Stats are fetched each time the tab is shown: they move.
      renderStats(panels.stats, current, () => m.close());
    }
    if (focusTab) tabButtons[key].focus();
  }

  lockTabs();
  select(first, false);
  m.focusFirst();
  return m;
}

/**
 * secretBox shows a signing secret once, with Copy. state.copied becomes
 * true when it was copied (the button, or the user's own copy of the
 * field), which lets the modal close without asking.
 */
function secretBox(secret, onDone, state, { title, text }) {
  const status = h('p', { class: 'hint copy-status', id: 'copy-status', role: 'status' });
  const input = h('input', { id: 'secret-value', class: 'secret-value', readonly: true, value: secret, spellcheck: 'false', autocomplete: 'off' });
  const copy = h('button', { type: 'button', class: 'btn btn-primary copy-secret', id: 'copy-secret' }, t('secret.copy'));
  input.addEventListener('copy', () => { state.copied = true; });
  copy.addEventListener('click', async () => {
    const ok = await copyText(secret, input);
    if (ok) state.copied = true;
    status.textContent = ok ? t('secret.copied') : t('secret.copyFailed');
    copy.textContent = ok ? t('secret.copied') : t('secret.copy');
    copy.classList.toggle('copied', ok);
    if (ok) {
      setTimeout(() => {
        copy.textContent = t('secret.copy');
        copy.classList.remove('copied');
      }, 2500);
    }
  });
  input.addEventListener('focus', () => input.select());
  const done = h('button', { type: 'button', class: 'btn', id: 'secret-done' }, t('secret.done'));
  done.addEventListener('click', onDone);
  return h('div', { class: 'secret-box', id: 'secret-box' },
    h('h3', {}, h('span', { class: 'ok-mark', 'aria-hidden': 'true' }, '✓ '), title),
    h('p', { id: 'secret-text' }, text),
    h('label', { for: 'secret-value' }, t('secret.label')),
    h('div', { class: 'secret-row' }, input, copy),
    status,
    h('div', { class: 'modal-actions' }, done));
}

/** copyText uses the async clipboard, falling back to execCommand. */
async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    input.focus();
    input.select();
    try {
      return document.execCommand('copy');
    } catch {
      return false;
    }
  }
}

// --- The form (Create and Edit) ---

const PATTERN_RE = /^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$/;
const FORMATS = ['json', 'slack', 'discord'];

/** urlProblem returns the i18n key of what is wrong with a URL, or null. */
export function urlProblem(raw, final) {
  const v = raw.trim();
  if (!v) return final ? 'err.required' : null;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(v);
  if (scheme) {
    const s = scheme[1].toLowerCase();
    if (s === 'http' && !session.allowHTTP) return 'err.urlHTTPS';
    if (s !== 'http' && s !== 'https') return 'err.urlScheme';
  } else if (!'https://'.startsWith(v.toLowerCase().slice(0, 8))) {
    // Not even the start of a scheme: say so once the user is done.
    return final ? 'err.urlInvalid' : null;
  }
  if (!final) return null;
  try {
    const u = new URL(v);
    if (!u.hostname) return 'err.urlInvalid';
  } catch {
    return 'err.urlInvalid';
  }
  return null;
}

function field(id, labelText, control, hint) {
  const errId = id + '-error';
  const hintId = hint ? id + '-hint' : null;
  control.setAttribute('aria-describedby', [hintId, errId].filter(Boolean).join(' '));
  return h('div', { class: 'field', 'data-field': id },
    h('label', { for: id }, labelText),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'field-error', id: errId }));
}

// Grace periods offered when rotating a secret, in seconds.
const GRACE_CHOICES = [[0, 'rotate.grace0'], [3600, 'rotate.grace1h'], [86400, 'rotate.grace24h'], [7 * 86400, 'rotate.grace7d']];

function webhookForm(existing, { onCancel, onDone, onRotated }) {
  const p = existing ? 'edit' : 'create';
  const form = h('form', { class: 'webhook-form', id: `${p}-form`, novalidate: true });

  // Name and URL.
  const name = h('input', { id: `${p}-name`, name: 'name', required: true, maxlength: '200', autocomplete: 'off', placeholder: t('form.namePlaceholder'), value: existing ? existing.name : '' });
  const url = h('input', { id: `${p}-url`, name: 'url', type: 'url', inputmode: 'url', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'https://', value: existing ? existing.url : '' });
  const urlHint = session.allowHTTP ? t('form.urlHintHTTP') : t('form.urlHint');

  // Events: checkboxes (from /api/event-types and the webhook's own
  // patterns) plus free entry of a type or pattern.
  const checks = h('div', { class: 'checks', id: `${p}-event-options` });
  const eventsErr = h('p', { class: 'field-error', id: `${p}-events-error` });
  const noTypes = h('p', { class: 'hint', hidden: true }, t('form.noEventTypes'));
  const seen = new Set();
  // catalog maps a cataloged type to its entry (description, example).
  const catalog = new Map();
  const addOption = (value, checked, description) => {
    if (seen.has(value)) {
      const box = checks.querySelector(`input[value="${CSS.escape(value)}"]`);
      if (box && checked) box.checked = true;
      return;
    }
    seen.add(value);
    const id = newId(`${p}-ev`);
    checks.append(h('label', { class: 'check', for: id, title: description || null },
      h('input', { type: 'checkbox', id, name: 'events', value, checked }), ' ', eventBadge(value),
      description ? h('span', { class: 'check-desc' }, description) : null));
    noTypes.hidden = true;
  };
  for (const e of existing ? existing.events : []) addOption(e, true);
  const patternId = `${p}-pattern`;
  const pattern = h('input', { id: patternId, class: 'pattern-input', autocomplete: 'off', spellcheck: 'false', placeholder: t('form.patternPlaceholder'), 'aria-describedby': `${p}-events-error` });
  const addBtn = h('button', { type: 'button', class: 'btn btn-small', id: `${p}-add-pattern` }, t('form.addPattern'));
  const addPattern = () => {
    const v = pattern.value.trim();
    if (!v) return;
    if (!PATTERN_RE.test(v) || v.length > 200) {
      eventsErr.textContent = t('err.pattern', { p: v });
      pattern.setAttribute('aria-invalid', 'true');
      return;
    }
    addOption(v, true);
    pattern.value = '';
    pattern.removeAttribute('aria-invalid');
    eventsErr.textContent = '';
    pattern.focus();
  };
  addBtn.addEventListener('click', addPattern);
  pattern.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault(); // Enter adds the pattern, it does not submit
      addPattern();
    }
  });
  // The catalog (relay.event_types) first, with descriptions, then the
  // types already emitted; the test event is not something to subscribe to.
  api.eventTypes().then((r) => {
    for (const e of r.catalog || []) {
      if (e.name === 'webhook.test') continue;
      catalog.set(e.name, e);
      addOption(e.name, false, e.description);
    }
    for (const ty of r.event_types || []) addOption(ty, false);
    if (seen.size === 0) noTypes.hidden = false;
  }).catch(() => {
    if (seen.size === 0) noTypes.hidden = false;
  });

  const eventsSet = h('fieldset', { class: 'field fieldset', 'data-field': `${p}-events`, 'aria-describedby': `${p}-events-hint ${p}-events-error` },
    h('legend', {}, t('form.events')),
    h('p', { class: 'hint', id: `${p}-events-hint` }, t('form.eventsHint')),
    checks, noTypes,
    h('div', { class: 'pattern-row' },
      h('label', { for: patternId }, t('form.pattern')),
      h('div', { class: 'inline' }, pattern, addBtn)),
    eventsErr);

  // Format.
  const current = existing ? existing.format : 'json';
  const formatErr = h('p', { class: 'field-error', id: `${p}-format-error` });
  const formatSet = h('fieldset', { class: 'field fieldset', 'aria-describedby': `${p}-format-error` },
    h('legend', {}, t('form.format')),
    h('div', { class: 'radios' }, FORMATS.map((f) => {
      const id = `${p}-format-${f}`;
      return h('label', { class: 'radio', for: id },
        h('input', { type: 'radio', id, name: 'format', value: f, checked: f === current }), ' ', t('form.format.' + f));
    })),
    formatErr);

  // Payload filter, checked against a sample payload by the server (the
  // same SQL fan-out runs), before saving.
  const filter = h('input', {
    id: `${p}-filter`, name: 'filter', autocomplete: 'off', spellcheck: 'false', class: 'mono',
    placeholder: '$.amount ? (@ > 100)', value: existing && existing.filter ? existing.filter : '',
  });
  const sample = h('textarea', { id: `${p}-sample`, class: 'mono sample', rows: '4', spellcheck: 'false', placeholder: '{"amount": 120}' });
  const sampleErr = h('p', { class: 'field-error', id: `${p}-sample-error` });
  const checkResult = h('p', { class: 'filter-result', id: `${p}-filter-result`, role: 'status' });
  const checkBtn = h('button', { type: 'button', class: 'btn btn-small', id: `${p}-check-filter` }, t('form.filterCheck'));
  // The sample starts as the catalog's example of the first chosen type.
  const fillSample = () => {
    if (sample.value.trim()) return;
    for (const box of checks.querySelectorAll('input:checked')) {
      const e = catalog.get(box.value);
      if (e && e.example) {
        sample.value = JSON.stringify(e.example, null, 2);
        return;
      }
    }
  };
  checkBtn.addEventListener('click', async () => {
    checkResult.textContent = '';
    checkResult.className = 'filter-result';
    setError('filter', '');
    sampleErr.textContent = '';
    const f = filter.value.trim();
    if (!f) {
      setError('filter', t('form.filterEmpty'));
      filter.focus();
      return;
    }
    fillSample();
    let payload = null;
    if (sample.value.trim()) {
      try {
        payload = JSON.parse(sample.value);
      } catch (e) {
        sampleErr.textContent = t('form.sampleInvalid', { reason: e.message });
        sample.focus();
        return;
      }
    }
    await withBusy(checkBtn, async () => {
      try {
        const r = await api.checkFilter(f, payload);
        const kind = t('form.filterKind.' + r.kind);
        if (r.matches === null || r.matches === undefined) {
          checkResult.textContent = t('form.filterValid', { kind });
        } else {
          checkResult.textContent = r.matches ? t('form.filterMatches', { kind }) : t('form.filterNoMatch', { kind });
          checkResult.classList.add(r.matches ? 'filter-yes' : 'filter-no');
        }
      } catch (err) {
        if (err instanceof ApiError && err.field === 'payload') sampleErr.textContent = err.message;
        else setError('filter', err.message);
      }
    });
  });
  const filterSet = h('fieldset', { class: 'field fieldset', 'data-field': `${p}-filter` },
    h('legend', {}, t('form.filter')),
    h('label', { for: `${p}-filter`, class: 'sr-only' }, t('form.filter')),
    filter,
    h('p', { class: 'hint', id: `${p}-filter-hint` }, t('form.filterHint')),
    h('p', { class: 'field-error', id: `${p}-filter-error` }),
    h('label', { for: `${p}-sample` }, t('form.sample')),
    sample, sampleErr,
    h('div', { class: 'inline' }, checkBtn),
    checkResult);
  filter.setAttribute('aria-describedby', `${p}-filter-hint ${p}-filter-error`);

  // Outside the delivery window.
  const ow = existing ? existing.outside_window || 'defer' : 'defer';
  const owSet = h('fieldset', { class: 'field fieldset', 'aria-describedby': `${p}-outside_window-error` },
    h('legend', {}, t('form.outsideWindow')),
    h('div', { class: 'radios' }, ['defer', 'send', 'skip'].map((v) => {
      const id = `${p}-outside-${v}`;
      return h('label', { class: 'radio', for: id },
        h('input', { type: 'radio', id, name: 'outside_window', value: v, checked: v === ow }), ' ', t('form.outside.' + v));
    })),
    h('p', { class: 'field-error', id: `${p}-outside_window-error` }));

  // Flow control: the endpoint's pace and per-key order.
  const rate = h('input', {
    id: `${p}-rate_limit`, type: 'number', min: '0', step: 'any', inputmode: 'decimal',
    value: existing && existing.rate_limit != null ? String(existing.rate_limit) : '',
  });
  const ordering = h('input', { type: 'checkbox', id: `${p}-ordering`, checked: !!(existing && existing.ordering === 'key') });
  const flowSet = h('div', { class: 'field-group' },
    field(`${p}-rate_limit`, t('form.rateLimit'), rate, t('form.rateLimitHint')),
    h('div', { class: 'field' },
      h('label', { class: 'check', for: `${p}-ordering` }, ordering, ' ', t('form.ordering')),
      h('p', { class: 'field-error', id: `${p}-ordering-error` })));

  const formErr = h('p', { class: 'form-error', id: `${p}-form-error`, role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: `${p}-submit` }, existing ? t('form.save') : t('form.create'));
  const cancel = h('button', { type: 'button', class: 'btn', onclick: onCancel }, t('cancel'));

  // Rotating the secret (existing webhooks): a new one is made and shown
  // once; the old one keeps signing for the chosen grace period.
  let rotateSet = null;
  if (existing) {
    const grace = h('select', { id: 'edit-rotate-grace', class: 'grace-select' },
      GRACE_CHOICES.map(([secs, key]) => h('option', { value: String(secs), selected: secs === 86400 }, t(key))));
    const rotate = h('button', { type: 'button', class: 'btn', id: 'edit-rotate' }, t('rotate.button'));
    rotate.addEventListener('click', async () => {
      const secs = Number(grace.value);
      const label = grace.options[grace.selectedIndex].textContent;
      const ok = await confirmDialog({
        title: t('rotate.title'),
        message: secs > 0 ? t('rotate.confirm', { name: existing.name, grace: label }) : t('rotate.confirmNow', { name: existing.name }),
        confirmLabel: t('rotate.ok'), danger: secs === 0,
      });
      if (!ok) return;
      await withBusy(rotate, async () => {
        try {
          onRotated(await api.rotateSecret(existing.id, secs));
        } catch (e) {
          formErr.textContent = t('error.generic', { reason: e.message });
        }
      });
    });
    rotateSet = h('fieldset', { class: 'field fieldset rotate-box', 'aria-describedby': 'edit-rotate-hint' },
      h('legend', {}, t('rotate.legend')),
      h('p', { class: 'hint', id: 'edit-rotate-hint' }, t('secret.hidden')),
      h('div', { class: 'inline rotate-row' },
        h('label', { for: 'edit-rotate-grace' }, t('rotate.graceLabel')), grace, rotate));
  }

  append(form,
    field(`${p}-name`, t('form.name'), name),
    field(`${p}-url`, t('form.url'), url, urlHint),
    eventsSet, formatSet, filterSet, owSet, flowSet,
    rotateSet,
    formErr,
    h('div', { class: 'modal-actions' }, cancel, submit));

  // isDirty tells the modal whether closing would lose typing.
  const snapshot = () => JSON.stringify([name.value.trim(), url.value.trim(), pattern.value.trim(),
    [...checks.querySelectorAll('input:checked')].map((c) => c.value).sort(),
    (form.querySelector('input[name="format"]:checked') || { value: '' }).value,
    filter.value.trim(), (form.querySelector('input[name="outside_window"]:checked') || { value: '' }).value,
    rate.value.trim(), ordering.checked]);
  // Compared with what the form started from (the event types offered
  // arrive later, unchecked, and change nothing).
  const initial = JSON.stringify([existing ? existing.name : '', existing ? existing.url : '', '',
    existing ? [...existing.events].sort() : [], existing ? existing.format : 'json',
    existing && existing.filter ? existing.filter : '', ow,
    existing && existing.rate_limit != null ? String(existing.rate_limit) : '', !!(existing && existing.ordering === 'key')]);
  let saved = false;
  form.isDirty = () => !saved && snapshot() !== initial;

  // Errors next to their field.
  const errEl = (key) => form.querySelector(`#${p}-${key}-error`);
  const controlOf = {
    name, url, events: pattern, format: form.querySelector(`#${p}-format-json`), filter,
    outside_window: form.querySelector(`#${p}-outside-defer`),
    rate_limit: rate, ordering,
  };
  function setError(key, message) {
    const el = errEl(key);
    if (el) el.textContent = message || '';
    const c = controlOf[key];
    if (c && key !== 'format' && key !== 'outside_window') c.setAttribute('aria-invalid', message ? 'true' : 'false');
  }
  filter.addEventListener('input', () => {
    setError('filter', '');
    checkResult.textContent = '';
  });

  // URL checked as you type: a wrong scheme is reported at once; an
  // incomplete URL only when the field is left, not at every keystroke.
  let urlTouched = !!existing;
  url.addEventListener('input', () => {
    const problem = urlProblem(url.value, urlTouched);
    setError('url', problem ? t(problem) : '');
  });
  url.addEventListener('blur', () => {
    if (!url.value.trim() && !urlTouched) return;
    urlTouched = true;
    const problem = urlProblem(url.value, true);
    setError('url', problem ? t(problem) : '');
  });
  name.addEventListener('input', () => {
    if (name.value.trim()) setError('name', '');
  });
  checks.addEventListener('change', () => setError('events', ''));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    // Enter in the pattern field adds the pattern; it must never submit,
    // whatever the way the key arrives (keydown, keypress, IME…).
    if (document.activeElement === pattern) {
      addPattern();
      return;
    }
    formErr.textContent = '';
    const values = {
      name: name.value.trim(),
      url: url.value.trim(),
      events: [...checks.querySelectorAll('input:checked')].map((c) => c.value),
      format: (form.querySelector('input[name="format"]:checked') || { value: 'json' }).value,
      outside_window: (form.querySelector('input[name="outside_window"]:checked') || { value: 'defer' }).value,
    };
    const filterText = filter.value.trim();
    if (filterText) values.filter = filterText;
    values.ordering = ordering.checked ? 'key' : 'none';
    const rateText = rate.value.trim();
    const rateValue = rateText === '' ? null : Number(rateText);
    if (rateValue !== null && !(rateValue > 0)) {
      setError('rate_limit', t('err.rateLimit'));
      formErr.textContent = t('form.fixErrors');
      rate.focus();
      return;
    }
    setError('rate_limit', '');
    if (rateValue !== null) values.rate_limit = rateValue;
    // A pattern typed but not added counts: people expect it to.
    const typed = pattern.value.trim();
    if (typed) {
      if (!PATTERN_RE.test(typed)) {
        setError('events', t('err.pattern', { p: typed }));
      } else if (!values.events.includes(typed)) {
        addOption(typed, true);
        values.events.push(typed);
        pattern.value = '';
      }
    }
    const problems = {};
    if (!values.name) problems.name = t('err.required');
    const up = urlProblem(values.url, true);
    if (up) problems.url = t(up);
    if (values.events.length === 0) problems.events = t('err.eventsRequired');
    for (const k of ['name', 'url', 'events']) setError(k, problems[k] || '');
    const firstBad = ['name', 'url', 'events'].find((k) => problems[k]);
    if (firstBad) {
      formErr.textContent = t('form.fixErrors');
      controlOf[firstBad].focus();
      return;
    }
    let body = values;
    if (existing) {
      // PATCH only what changed.
      body = {};
      if (values.name !== existing.name) body.name = values.name;
      if (values.url !== existing.url) body.url = values.url;
      if ([...values.events].sort().join(' ') !== [...existing.events].sort().join(' ')) body.events = values.events;
      if (values.format !== existing.format) body.format = values.format;
      if (values.outside_window !== (existing.outside_window || 'defer')) body.outside_window = values.outside_window;
      if (filterText !== (existing.filter || '')) body.filter = filterText || null;
      if (rateValue !== (existing.rate_limit ?? null)) body.rate_limit = rateValue;
      if (values.ordering !== (existing.ordering || 'none')) body.ordering = values.ordering;
      if (Object.keys(body).length === 0) {
        saved = true;
        onDone(existing);
        return;
      }
    }
    await withBusy(submit, async () => {
      try {
        const res = existing ? await api.updateWebhook(existing.id, body) : await api.createWebhook(body);
        saved = true;
        onDone(res);
      } catch (err) {
        showServerError(err);
      }
    });
  });

  // Server-side validation errors name a field: show them there.
  function showServerError(err) {
    const known = {
      name: 'name', url: 'url', events: 'events', format: 'format', filter: 'filter', outside_window: 'outside_window',
      rate_limit: 'rate_limit', rate_burst: 'rate_limit', ordering: 'ordering',
    };
    const key = err instanceof ApiError && err.field ? known[err.field] : null;
    if (key) {
      setError(key, err.message);
      formErr.textContent = t('form.fixErrors');
      if (controlOf[key]) controlOf[key].focus();
    } else {
      formErr.textContent = t('error.generic', { reason: err.message });
    }
  }

  return form;
}
