// Requests: a filterable list, newest first, in pages; one request's detail.
import { api } from "../api.js";
import { card, h, table } from "../dom.js";
import { count, label, money, ms, when } from "../format.js";

const FILTERS = ["application", "use_case", "user", "account", "tag", "resource", "category"];
const STATUSES = ["failed", "succeeded", "unpriced", "priced"];
const PAGE = 50;

function status(r) {
  if (r.failed) return h("span", { class: "badge failed" }, `failed ${r.http_status_code ?? ""}`.trim());
  if (r.cost_usd === null) return h("span", { class: "badge unpriced" }, "unpriced");
  return h("span", { class: "badge ok" }, String(r.http_status_code ?? "ok"));
}

export async function render(root, { window, query }) {
  const filters = Object.fromEntries([...FILTERS, "status"].map((f) => [f, query.get(f) || ""]));
  const params = { ...filters, since: window, limit: PAGE };
  const rows = [];
  const list = h("div", {});
  const more = h("button", { type: "button", class: "ghost", hidden: true }, "Load more");
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    const page = await api("/api/v1/reports/requests", { params: { ...params, cursor } });
    rows.push(...page.items);
    cursor = page.cursor;
    more.hidden = !page.has_more;
    more.disabled = false;
    list.replaceChildren(table([
      { title: "time", value: (r) => when(r.event_timestamp) },
      { title: "application", value: (r) => r.application },
      { title: "resource", value: (r) => label(r.resource) },
      { title: "use case", value: (r) => label(r.use_case_name) },
      { title: "user", value: (r) => label(r.user_id) },
      { title: "tokens in/out", num: true, value: (r) => `${count(r.input_tokens)} / ${count(r.output_tokens)}` },
      { title: "cost", num: true, value: (r) => money(r.cost_usd) },
      { title: "latency", num: true, value: (r) => ms(r.latency_ms) },
      { title: "status", value: status },
    ], rows, { testid: "requests-table", empty: "No requests match",
      onRow: (r) => { location.hash = `#/requests/${encodeURIComponent(r.request_id)}`; } }));
  };
  more.addEventListener("click", load);
  const inputs = FILTERS.map((f) => h("input", { name: f, value: filters[f], placeholder: f.replace("_", " "),
    "aria-label": f.replace("_", " ") }));
  inputs.push(h("select", { name: "status", "aria-label": "status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((v) => h("option", { value: v, selected: v === filters.status }, v))));
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams(inputs.filter((i) => i.value.trim()).map((i) => [i.name, i.value.trim()]));
    location.hash = `#/requests${q.size ? `?${q}` : ""}`;
  } }, inputs, h("button", { type: "submit" }, "Filter"),
  h("button", { type: "button", class: "ghost", onclick: () => { location.hash = "#/requests"; } }, "Clear"));
  root.replaceChildren(h("h1", {}, "Requests"), card("Newest first", { wide: true }, form, list, more));
  await load();
}

const kv = (pairs) => h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k),
  h("dd", { "data-field": k }, v === null || v === undefined || v === "" ? "—" : v)]));

export async function renderDetail(root, { param }) {
  const r = await api(`/api/v1/reports/requests/${encodeURIComponent(param)}`);
  const units = Object.entries(r.units || {});
  const content = r.provider_data ? JSON.stringify(r.provider_data, null, 2) : null;
  root.replaceChildren(
    h("div", { class: "row" }, h("h1", {}, "Request"), h("a", { href: "#/requests" }, "← Requests")),
    h("div", { class: "grid", "data-testid": "request-detail" },
      card("Summary", {}, kv([
        ["time", when(r.event_timestamp)], ["received", when(r.ingest_timestamp)], ["application", r.application],
        ["category", r.category], ["resource", r.resource], ["status", status({ ...r, cost_usd: r.cost_total })],
        ["HTTP status", r.http_status_code], ["latency", ms(r.latency_ms)], ["time to first token", ms(r.ttft_ms)],
      ])),
      card("Cost", {}, kv([
        ["input", money(r.cost_input)], ["output", money(r.cost_output)], ["total", money(r.cost_total)],
        ["unpriced because", r.unpriced_reason],
      ]), h("h2", {}, "Units"), table([
        { title: "unit", value: ([u]) => u },
        { title: "input", num: true, value: ([, v]) => count(v.input) },
        { title: "output", num: true, value: ([, v]) => count(v.output) },
      ], units, { testid: "units-table" })),
      card("Context", {}, kv([
        ["use case", r.use_case_name], ["use case id", r.use_case_id], ["version", r.use_case_version],
        ["step", r.use_case_step], ["user", r.user_id], ["account", r.account_name],
        ["tags", (r.request_tags || []).join(", ")],
        ["limits", Object.entries(r.limit_states || {}).map(([id, s]) => `${id}: ${s}`).join(", ")],
        ...Object.entries(r.properties || {}).map(([k, v]) => [`property ${k}`, v]),
      ])),
      card("Ids", {}, kv([
        ["request id", h("code", {}, r.request_id)], ["provider response id", r.provider_response_id],
        ["resource id", r.resource_id], ["resource scope", r.resource_scope],
      ])),
      card("Captured content", { wide: true }, content ? h("pre", { class: "content" }, content)
        : h("p", { class: "muted" }, "No content was captured for this request (capture is opt-in).")),
    ),
  );
}
