// Use cases: definitions with their instances, cost and KPI scores against goals; the newest instances.
import { api, report } from "../api.js";
import { card, h, table } from "../dom.js";
import { count, label, money, when } from "../format.js";

const kpiText = (k) => `${k.name}: ${k.mean_score === null ? "—" : k.mean_score.toFixed(2)} / goal ${k.goal}`
  + ` (${count(k.scored_instances)} scored)`;

export async function render(root, { window }) {
  const [overview, costs] = await Promise.all([
    api("/api/v1/reports/use_cases", { params: { recent: 25 } }),
    report(["application", "use_case"], { since: window }),
  ]);
  const cost = new Map(costs.rows.map((r) => [`${r.group.application}\u0000${r.group.use_case}`, r]));
  const usage = (u) => cost.get(`${u.application}\u0000${u.use_case_name}`) || {};
  const kpiNames = [...new Set(overview.recent_instances.flatMap((i) => Object.keys(i.kpi_scores)))].sort();
  root.replaceChildren(h("h1", {}, "Use cases"), h("div", { class: "grid" },
    card("Use cases", { wide: true }, table([
      { title: "application", value: (u) => u.application },
      { title: "use case", value: (u) => u.use_case_name },
      { title: "version", num: true, value: (u) => u.version },
      { title: "instances", num: true, value: (u) => count(u.instances) },
      { title: "requests", num: true, value: (u) => count(usage(u).requests ?? 0) },
      { title: "cost", num: true, value: (u) => money(usage(u).cost_usd) },
      { title: "KPIs (mean score / goal)", value: (u) => (u.kpis.length ? u.kpis.map(kpiText).join("; ") : "—") },
    ], overview.use_cases, { testid: "use-cases-table", empty: "No use cases yet" })),
    card("Newest instances", { wide: true }, table([
      { title: "created", value: (i) => when(i.created) },
      { title: "application", value: (i) => i.application },
      { title: "use case", value: (i) => i.use_case_name },
      { title: "instance id", value: (i) => h("a", { href: `#/requests?use_case=${encodeURIComponent(i.use_case_name)}` },
        h("span", { class: "mono" }, i.use_case_id)) },
      ...kpiNames.map((k) => ({ title: k, num: true, value: (i) => label(i.kpi_scores[k] ?? "—") })),
    ], overview.recent_instances, { testid: "instances-table", empty: "No instances yet" })),
  ));
}
