// The service's JSON APIs. On a service that is not on loopback they need the admin token, which the
// user enters once per browser tab (kept in sessionStorage) or passes as #token=... in the address.
const TOKEN = "payi-otel-admin-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function takeTokenFromAddress() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return;
  sessionStorage.setItem(TOKEN, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search + "#/overview");
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN, token);
}

export async function api(path, { method = "GET", params = null, body = null } = {}) {
  const url = new URL(path, location.href);
  for (const [name, value] of Object.entries(params || {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.append(name, v);
    }
  }
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== null) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === null ? null : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) sessionStorage.removeItem(TOKEN);
    throw new ApiError(response.status, (data && data.message) || response.statusText);
  }
  return data;
}

export const report = (groupBy, params = {}) => api("/api/v1/reports", { params: { ...params, group_by: groupBy } });
