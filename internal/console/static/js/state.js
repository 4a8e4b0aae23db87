// state.js — what the console knows about the signed-in session, shared by
// the views. It is rebuilt at every sign-in and never persisted (only the
// token is, by api.js, in sessionStorage).

export const session = {
  // operator is true for the operator token, false for an owner token.
  operator: false,
  // owner is the owner an owner token acts for, when known (the API has no
  // "who am I" route: it is read from the owner's webhooks).
  owner: null,
  // allowHTTP mirrors relay.settings.allow_http. Only the operator can read
  // settings, so for owner tokens it stays false and http:// URLs are
  // refused as you type, like on a production server.
  allowHTTP: false,
  // paused mirrors relay.settings.paused (operator only), for the banner.
  paused: false,
  pausedReason: null,
};

export function resetSession() {
  session.operator = false;
  session.owner = null;
  session.allowHTTP = false;
  session.paused = false;
  session.pausedReason = null;
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
