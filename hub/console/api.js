// The admin API, as the console uses it: bearer token in the Authorization header (never a cookie).

const KEY = "hub.token";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
  },
  who: null,
};

async function call(method, path, { params, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/login") {
      window.dispatchEvent(new CustomEvent("hub:unauthorized"));
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

export const api = {
  get: (path, params) => call("GET", path, { params }),
  post: (path, body) => call("POST", path, { body: body === undefined ? {} : body }),
};

export const can = (role) => {
  const rank = { viewer: 0, operator: 1, admin: 2 };
  return session.who !== null && rank[session.who.role] >= rank[role];
};
