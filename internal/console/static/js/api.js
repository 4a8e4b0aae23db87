// api.js — the console's only way to the server: the admin API under /api.
//
// The token lives in sessionStorage, as the issue asks: it survives a reload
// of the tab but not closing it, and other tabs never see it. It is sent as
// "Authorization: Bearer …" (never in a URL, so it stays out of logs and
// history).

const TOKEN_KEY = 'relay.token';

/** ApiError carries the API's error body: {"error": {code, message, field}}. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // HTTP status, 0 when the server was not reached
    this.code = code;     // "invalid_field", "not_found", "conflict", …
    this.field = field;   // the request field the error names, or null
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// onUnauthorized is called when a request with the stored token answers 401
// (revoked token, server restarted with another operator token): the app
// signs out instead of showing every view broken.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

// portalCSRF is set by the owner portal (portal.js): its session is an
// HttpOnly cookie the page cannot read, so requests send no Authorization
// header but the cookie (credentials: same-origin) and, when they change
// something, the session's CSRF token.
let portalCSRF = null;
export function usePortalSession(csrfToken) {
  portalCSRF = csrfToken;
}

/**
 * request calls the API and returns the decoded JSON (null for 204).
 * It throws ApiError for any answer that is not 2xx and for network errors.
 * opts.token overrides the stored token (used by sign-in, before storing).
 */
export async function request(method, path, body, opts = {}) {
  const token = opts.token ?? getToken();
  const headers = { Accept: 'application/json', Authorization: 'Bearer ' + token };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (portalCSRF !== null && opts.token === undefined) {
    delete headers.Authorization;
    init.credentials = 'same-origin';
    if (method !== 'GET' && method !== 'HEAD') headers['X-Relay-CSRF'] = portalCSRF;
  }
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', e && e.message ? e.message : String(e), null);
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    // Not JSON (a proxy's error page, say): fall through with data null.
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    const err = new ApiError(res.status, e.code || 'http_' + res.status, e.message || res.statusText, e.field || null);
    if (res.status === 401 && opts.token === undefined) onUnauthorized(err);
    throw err;
  }
  return data;
}

/** query builds "?a=1&b=2" from the non-empty values of params. */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

// --- the routes the console uses (see /api/openapi.json) ---

export const api = {
  listWebhooks: () => request('GET', '/api/webhooks').then((r) => r.webhooks),
  getWebhook: (id) => request('GET', `/api/webhooks/${id}`),
  createWebhook: (body) => request('POST', '/api/webhooks', body),
  updateWebhook: (id, body) => request('PATCH', `/api/webhooks/${id}`, body),
  deleteWebhook: (id) => request('DELETE', `/api/webhooks/${id}`),
  testWebhook: (id) => request('POST', `/api/webhooks/${id}/test`),
  rotateSecret: (id, graceSeconds) => request('POST', `/api/webhooks/${id}/rotate-secret`, { grace_seconds: graceSeconds }),
  listDeliveries: (params) => request('GET', '/api/deliveries' + query(params)),
  getDelivery: (id) => request('GET', `/api/deliveries/${id}`),
  redeliver: (id) => request('POST', `/api/deliveries/${id}/redeliver`),
  // stats: figures per webhook over params.days, and params.hours of
  // deliveries per hour counted by the server (params.webhook_id narrows).
  stats: (params) => request('GET', '/api/stats' + query(params)),
  // eventTypes answers {event_types: [names], catalog: [{name, description, example, …}]}.
  eventTypes: () => request('GET', '/api/event-types'),
  checkFilter: (filter, payload) => request('POST', '/api/filters/check', { filter, payload }),
  me: () => request('GET', '/api/me'),
  getSettings: () => request('GET', '/api/settings'),
  putSettings: (body) => request('PUT', '/api/settings', body),
};

/**
 * probe checks a token before it is stored and tells who it is and what the
 * settings allow it (GET /api/me): {operator, owner, allow_http, paused, …}.
 * A wrong token throws an ApiError with status 401.
 */
export function probe(token) {
  return request('GET', '/api/me', undefined, { token });
}
