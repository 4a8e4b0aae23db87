// app.js — boots the console: sign-in, the shell (top bar, navigation,
// language switch) and a tiny hash router over the three views. Views are
// modules with mount(section, params) and an optional unmount(); the router
// mounts one at a time so that, for instance, the deliveries poller runs only
// while the deliveries view is on screen.

import { ApiError, clearToken, getToken, probe, setToken, setUnauthorizedHandler } from './api.js';
import { applyStatic, lang, onLangChange, setLang, t } from './i18n.js';
import { applyMe, resetSession, session } from './state.js';
import * as webhooks from './webhooks.js';
import * as deliveries from './deliveries.js';
import * as settings from './settings.js';

const views = { webhooks, deliveries, settings };
let currentView = null;

const $ = (id) => document.getElementById(id);

// --- sign-in ---

function showSignIn(message) {
  stopView();
  $('shell').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('token').setAttribute('aria-invalid', message ? 'true' : 'false');
  $('token').focus();
}

async function signIn(token) {
  const me = await probe(token); // throws ApiError on a wrong token
  setToken(token);
  resetSession();
  applyMe(me);
  startShell();
}

function renderPausedBanner() {
  const b = $('paused-banner');
  b.hidden = !session.paused;
  b.textContent = session.paused
    ? t('paused.banner', { reason: session.pausedReason ? ` (${session.pausedReason})` : '' })
    : '';
}

function renderWhoAmI() {
  const w = $('whoami');
  if (session.operator) w.textContent = t('who.operator');
  else w.textContent = session.owner ? t('who.owner', { owner: session.owner }) : t('who.ownerUnknown');
  w.className = 'whoami ' + (session.operator ? 'whoami-operator' : 'whoami-owner');
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const token = $('token').value.trim();
  if (!token) {
    showSignIn(t('signin.empty'));
    return;
  }
  const btn = $('signin-submit');
  btn.disabled = true;
  try {
    await signIn(token);
    $('token').value = '';
  } catch (err) {
    const reason = err instanceof ApiError ? err.message : String(err);
    if (err instanceof ApiError && err.status === 0) showSignIn(t('signin.unreachable', { reason }));
    else showSignIn(t('signin.wrong', { reason }));
  } finally {
    btn.disabled = false;
  }
});

// A token that stops working mid-session (revoked, server restarted with
// another operator token) sends the user back to sign-in with a message.
setUnauthorizedHandler(() => {
  clearToken();
  showSignIn(t('signin.expired'));
});

$('signout').addEventListener('click', () => {
  clearToken();
  resetSession();
  location.hash = '';
  showSignIn('');
});

// --- shell and router ---

function startShell() {
  $('signin').hidden = true;
  $('shell').hidden = false;
  $('nav-settings').hidden = !session.operator;
  renderWhoAmI();
  renderPausedBanner();
  route();
  // Focus would otherwise fall to <body> with the sign-in form gone:
  // start on the view's heading, where a screen reader says where it is.
  const heading = document.querySelector('.view:not([hidden]) h1');
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

/** parseHash reads "#/deliveries?status=failed" into {name, params}. */
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
  if (!getToken() || $('shell').hidden) return;
  let { name, params } = parseHash();
  if (!views[name] || (name === 'settings' && !session.operator)) name = 'webhooks';
  stopView();
  for (const [n] of Object.entries(views)) {
    $('view-' + n).hidden = n !== name;
    const link = $('nav-' + n);
    if (n === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const section = $('view-' + name);
  currentView = { name, module: views[name] };
  views[name].mount(section, params);
}

window.addEventListener('hashchange', route);

// Views report session changes (owner learnt, paused, resumed) this way.
document.addEventListener('relay:session', () => {
  renderWhoAmI();
  renderPausedBanner();
});

// --- language ---

for (const sel of document.querySelectorAll('.lang-select')) {
  sel.addEventListener('change', () => setLang(sel.value));
}
onLangChange(() => {
  if (!$('shell').hidden) {
    renderWhoAmI();
    renderPausedBanner();
    route(); // rebuild the current view in the new language
  } else if ($('signin-error').textContent) {
    $('signin-error').textContent = '';
  }
});

// --- boot ---

applyStatic(document);
document.documentElement.lang = lang();
const saved = getToken();
if (saved) {
  // A reload keeps the tab's session: check the token again quietly.
  signIn(saved).catch(() => {
    clearToken();
    showSignIn(t('signin.expired'));
  });
} else {
  showSignIn('');
}
