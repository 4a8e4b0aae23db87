// state.js — what the console knows about the signed-in session, shared by
// the views. It is rebuilt at every sign-in and never persisted (only the
// token is, by api.js, in sessionStorage).

export const session = {
  // operator is true for the operator token, false for an owner token.
  operator: false,
  // owner is the owner an owner token acts for (GET /api/me).
  owner: null,
  // allowHTTP mirrors relay.settings.allow_http, as GET /api/me tells every
  // token, so http:// URLs are refused as you type only where the server
  // refuses them.
  allowHTTP: false,
  // paused mirrors relay.settings.paused, for the banner; the reason is
  // told to the operator only.
  paused: false,
  pausedReason: null,
  // canTest tells whether this server can send test deliveries.
  canTest: true,
};

export function resetSession() {
  session.operator = false;
  session.owner = null;
  session.allowHTTP = false;
  session.paused = false;
  session.pausedReason = null;
  session.canTest = true;
}

/** applyMe fills the session from GET /api/me. */
export function applyMe(me) {
  session.operator = !!me.operator;
  session.owner = me.owner || null;
  session.allowHTTP = !!me.allow_http;
  session.paused = !!me.paused;
  session.pausedReason = me.paused_reason || null;
  session.canTest = me.can_test_webhooks !== false;
  sessionChanged();
}

// sessionChanged tells the shell (top bar, paused banner) that session
// fields changed; views call it instead of importing app.js, which keeps
// the module graph free of cycles.
export function sessionChanged() {
  document.dispatchEvent(new Event('relay:session'));
}

/** applySettings keeps the session's copy of relay.settings current. */
export function applySettings(s) {
  session.allowHTTP = !!s.allow_http;
  session.paused = !!s.paused;
  session.pausedReason = s.paused_reason || null;
  sessionChanged();
}
