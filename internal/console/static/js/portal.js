// portal.js — boots the owner portal (portal.html): the console's webhooks
// and deliveries views for one owner, inside an application's iframe.
//
// The application's backend asked relay for a portal session and framed
// /portal?code=…; this page trades the one-time code for the session cookie
// (HttpOnly: the page never holds the session's secret), drops the code
// from its URL, and from then on the API calls carry the cookie and the
// session's CSRF token (api.js, usePortalSession). A reload finds the
// session again from the cookie. There is no sign-in and nothing of the
// operator's (settings, other owners, the paused banner).
//
// The host chooses the language (?lang=fr) and an accent colour
// (?accent=%23RRGGBB), and this page tells it its height after every
// change (postMessage {type: "relay:portal:height", height}), so the host
// sizes the iframe and its tab has a single scroll bar. Messages go to the
// parent's origin only, never to "*".

import { api, ApiError, setUnauthorizedHandler, usePortalSession } from './api.js';
import { applyStatic, lang, onLangChange, setLang } from './i18n.js';
import { applyMe, resetSession, session } from './state.js';
import * as webhooks from './webhooks.js';
import * as deliveries from './deliveries.js';

const views = { webhooks, deliveries };
let currentView = null;
let info = null; // the session, as GET /api/portal/session answers it
let expiryTimer = 0;

const $ = (id) => document.getElementById(id);

// The portal's own few strings; the views' come from i18n.js.
const strings = {
  en: {
    loading: 'Loading…',
    session_expired: 'Your session has expired',
    session_revoked: 'This session was ended',
    session_invalid: 'No session',
    code_used: 'This link was already used',
    code_expired: 'This link has expired',
    code_invalid: 'This link is not valid',
    cookies: 'Your browser did not keep the session',
    cookiesText: 'It refuses cookies for embedded pages. Allow them for this site, or open the page again from the application.',
    network: 'The webhook service cannot be reached',
    again: 'Open this page again from the application.',
    back: 'Back to the application',
  },
  fr: {
    loading: 'Chargement…',
    session_expired: 'Votre session a expiré',
    session_revoked: 'Cette session a été fermée',
    session_invalid: 'Aucune session',
    code_used: 'Ce lien a déjà servi',
    code_expired: 'Ce lien a expiré',
    code_invalid: 'Ce lien n’est pas valide',
    cookies: 'Votre navigateur n’a pas gardé la session',
    cookiesText: 'Il refuse les cookies des pages intégrées. Autorisez-les pour ce site, ou rouvrez la page depuis l’application.',
    network: 'Le service de webhooks est injoignable',
    again: 'Rouvrez cette page depuis l’application.',
    back: 'Retour à l’application',
  },
};
const pt = (key) => (strings[lang()] || strings.en)[key] ?? strings.en[key];

// --- what the host asks for: language and accent ---

const params = new URLSearchParams(location.search);
if (params.get('lang')) setLang(params.get('lang').toLowerCase().split('-')[0]);

/** applyAccent sets the console's primary colour from "#RGB" or "#RRGGBB". */
function applyAccent(raw) {
  const m = /^#?([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(raw || '');
  if (!m) return;
  let hex = m[1];
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join('');
  const c = '#' + hex;
  const root = document.documentElement.style;
  root.setProperty('--primary', c);
  root.setProperty('--primary-hover', `color-mix(in srgb, ${c} 80%, black)`);
  root.setProperty('--primary-soft', `color-mix(in srgb, ${c} 12%, white)`);
  root.setProperty('--focus', c);
  // Text on the accent: dark on a light colour, white otherwise.
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  root.setProperty('--on-primary', lum > 0.6 ? '#1c2033' : '#ffffff');
}
applyAccent(params.get('accent'));

// --- telling the parent our height ---

/** parentOrigins are the origins height messages go to. */
function parentOrigins() {
  if (window.parent === window) return [];
  // Chromium and Safari name the parent's origin; elsewhere post to each
  // origin allowed to frame the page: the browser delivers a message only
  // to a window of the origin it names, so only the real parent gets it.
  if (location.ancestorOrigins && location.ancestorOrigins.length) return [location.ancestorOrigins[0]];
  return info ? info.frame_origins : [];
}

let lastHeight = 0;
let measureQueued = false;

function measure() {
  measureQueued = false;
  let height = Math.ceil(document.body.getBoundingClientRect().height);
  // An open modal lives in the top layer, outside the body's height.
  for (const d of document.querySelectorAll('dialog[open]')) {
    const r = d.getBoundingClientRect();
    height = Math.max(height, Math.ceil(r.top + window.scrollY + d.scrollHeight + 16));
  }
  if (height === lastHeight) return;
  lastHeight = height;
  for (const origin of parentOrigins()) {
    window.parent.postMessage({ type: 'relay:portal:height', height }, origin);
  }
}

function queueMeasure() {
  if (measureQueued) return;
  measureQueued = true;
  requestAnimationFrame(measure);
}

new ResizeObserver(queueMeasure).observe(document.body);
new MutationObserver(queueMeasure).observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ['open', 'hidden'] });

// --- the status card (loading, ended session) ---

function showStatus(kind) {
  stopView();
  clearTimeout(expiryTimer);
  $('shell').hidden = true;
  $('portal-status').hidden = false;
  $('portal-status').dataset.state = kind;
  $('portal-status-title').textContent = pt(kind);
  $('portal-status-text').textContent = kind === 'loading' ? '' : kind === 'cookies' ? pt('cookiesText') : pt('again');
  const back = $('portal-return');
  const url = info && info.return_url;
  back.hidden = kind === 'loading' || !url;
  if (url) back.href = url;
  back.textContent = pt('back');
  queueMeasure();
}

// --- the session ---

/** call is a request of the page's own routes (exchange, session). */
async function call(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', String(e), null);
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code || 'http_' + res.status, e.message || res.statusText, null);
  }
  return data;
}

/** statusFor names the status card for an error of the API. */
function statusFor(err) {
  if (!(err instanceof ApiError)) return 'network';
  if (err.status === 0) return 'network';
  if (strings.en[err.code]) return err.code;
  return 'session_invalid';
}

let exchanged = false;

async function start() {
  applyStatic(document);
  showStatus('loading');
  const code = params.get('code');
  try {
    if (code) {
      // Drop the code from the address first: it is spent either way.
      params.delete('code');
      const qs = params.toString();
      history.replaceState(null, '', location.pathname + (qs ? '?' + qs : '') + location.hash);
      info = await call('POST', '/api/portal/exchange', { code });
      exchanged = true;
    } else {
      info = await call('GET', '/api/portal/session');
    }
  } catch (err) {
    showStatus(statusFor(err));
    return;
  }
  usePortalSession(info.csrf_token);
  resetSession();
  try {
    // What the settings let this owner do (http:// URLs, test sends).
    applyMe(await api.me());
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) showStatus(statusFor(err));
    return; // a 401 already showed its status card
  }
  session.operator = false;
  session.owner = info.owner;
  const left = new Date(info.expires_at).getTime() - Date.now();
  expiryTimer = setTimeout(() => showStatus('session_expired'), Math.max(0, Math.min(left, 2 ** 31 - 1)));
  $('portal-status').hidden = true;
  $('shell').hidden = false;
  route();
}

// A request refused with 401 ends the page's session. Right after an
// exchange, a 401 without a session error means the browser dropped the
// cookie (third-party cookies blocked).
// Several requests may be refused at once (a view loads its list, its
// filters' options…): the first refusal says why the session ended (the
// server then drops the cookie, so the next ones look like a missing
// cookie), and later ones do not change the card.
let ended = false;
setUnauthorizedHandler((err) => {
  if (ended) return;
  ended = true;
  if (err.code === 'unauthorized' && exchanged) showStatus('cookies');
  else showStatus(statusFor(err));
});

// --- router: #/webhooks, #/deliveries?… ---

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [name, qs] = raw.split('?');
  return { name: name || 'webhooks', params: new URLSearchParams(qs || '') };
}

function stopView() {
  if (currentView && currentView.module.unmount) currentView.module.unmount();
  currentView = null;
}

function route() {
  if ($('shell').hidden) return;
  let { name, params: p } = parseHash();
  if (!views[name]) name = 'webhooks';
  stopView();
  for (const n of Object.keys(views)) {
    $('view-' + n).hidden = n !== name;
    const link = $('nav-' + n);
    if (n === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  currentView = { name, module: views[name] };
  views[name].mount($('view-' + name), p);
}

window.addEventListener('hashchange', route);
onLangChange(() => {
  if (!$('shell').hidden) route();
  else showStatus($('portal-status').dataset.state || 'loading');
});

start();
