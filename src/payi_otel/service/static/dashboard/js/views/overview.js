// Overview: totals, cost over time, cost by a chosen dimension, top spenders, failures, unpriced, latency.
import { report } from "../api.js";
import { costBars, costOverTime } from "../charts.js";
import { card, h, stat, table } from "../dom.js";
import { count, label, money, ms } from "../format.js";

const BREAKDOWNS = ["application", "use_case", "user", "account", "tag", "resource", "category"];
const state = { period: "day", breakdown: "application" };

const costColumns = (dim) => [
  { title: dim.replace("_", " "), value: (r) => (r.isTotal ? "Total" : label(r.group[dim])) },
  { title: "requests", num: true, value: (r) => count(r.requests) },
  { title: "cost", num: true, value: (r) => money(r.cost_usd) },
];

// A row opens the request list filtered to its value (requests without a value have no filter to open).
const drill = (dim) => (row) => {
  const value = row.group[dim];
  if (value !== null && value !== undefined) location.hash = `#/requests?${new URLSearchParams({ [dim]: value })}`;
};

export async function render(root, { window, rerender }) {
  const params = { since: window };
  // every report carries the window's totals: four reports make the page
  const [time, breakdown, users, resources] = await Promise.all([
    report([state.period], params), report([state.breakdown], params), report(["user"], params),
    report(["resource"], params),
  ]);
  const t = time.total;
  const choose = (options, current, onChange, name) => h("select", { "aria-label": name, onchange: (e) => {
    onChange(e.target.value);
    rerender();
  } }, options.map((o) => h("option", { value: o, selected: o === current }, o.replace("_", " "))));

  root.replaceChildren(
    h("h1", {}, "Overview"),
    h("div", { class: "stats" },
      stat("Total cost", money(t.cost_usd), `${count(t.priced_requests)} priced requests`, "total-cost"),
      stat("Requests", count(t.requests), null, "total-requests"),
      stat("Unpriced", count(t.unpriced_requests), t.unpriced_requests
        ? h("a", { href: "#/requests?status=unpriced" }, "not counted as $0: see them") : "not counted as $0",
      "total-unpriced"),
      stat("Failures", count(t.failures), t.failures ? h("a", { href: "#/requests?status=failed" }, "see them") : null,
        "total-failures"),
      stat("Latency p50", ms(t.latency_p50_ms), null, "latency-p50"),
      stat("Latency p95", ms(t.latency_p95_ms), null, "latency-p95"),
      stat("Tokens", `${count(t.input_tokens)} in`, `${count(t.output_tokens)} out`, "total-tokens"),
    ),
    h("div", { class: "grid" },
      card("Cost over time", { wide: true },
        h("div", { class: "row" }, h("span", { class: "muted" }, "UTC, by"),
          choose(["day", "hour"], state.period, (v) => { state.period = v; }, "Period")),
        costOverTime(time.rows.map((r) => r.group[state.period]), time.rows.map((r) => r.cost_usd ?? 0),
          time.rows.map((r) => r.requests), "chart-cost-over-time")),
      card("Cost by", { testid: "breakdown" },
        h("div", { class: "row" }, choose(BREAKDOWNS, state.breakdown, (v) => { state.breakdown = v; }, "Dimension")),
        costBars(breakdown.rows.slice(0, 10).map((r) => label(r.group[state.breakdown])),
          breakdown.rows.slice(0, 10).map((r) => r.cost_usd ?? 0), "chart-breakdown", { short: true }),
        table(costColumns(state.breakdown), breakdown.rows, { footer: breakdown.total, testid: "breakdown-table",
          onRow: drill(state.breakdown) })),
      card("Top spenders (users)", { testid: "top-spenders" },
        table(costColumns("user"), users.rows.slice(0, 10), { testid: "top-spenders-table", onRow: drill("user") })),
      card("Failures, unpriced requests and latency by resource", { wide: true },
        table([
          { title: "resource", value: (r) => (r.isTotal ? "Total" : label(r.group.resource)) },
          { title: "requests", num: true, value: (r) => count(r.requests) },
          { title: "cost", num: true, value: (r) => money(r.cost_usd) },
          { title: "failures", num: true, value: (r) => count(r.failures) },
          { title: "unpriced", num: true, value: (r) => count(r.unpriced_requests) },
          { title: "p50", num: true, value: (r) => ms(r.latency_p50_ms) },
          { title: "p95", num: true, value: (r) => ms(r.latency_p95_ms) },
        ], resources.rows, { footer: resources.total, testid: "resources-table", onRow: drill("resource") })),
    ),
  );
}
