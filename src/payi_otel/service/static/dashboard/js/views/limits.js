// Limits: spend against max since the last reset, and state.
import { report } from "../api.js";
import { card, h, table } from "../dom.js";
import { count, money, percent, when } from "../format.js";

export async function render(root) {
  const { limits } = await report([]);
  const bar = (l) => h("div", { class: "bar", title: percent(l.used_percent) },
    h("span", { class: l.state, "data-width": Math.min(100, l.used_percent ?? 0) }));
  root.replaceChildren(h("h1", {}, "Limits"), card("Spend against max", { wide: true }, table([
    { title: "application", value: (l) => l.application },
    { title: "limit", value: (l) => l.limit_name },
    { title: "type", value: (l) => l.limit_type },
    { title: "spend", num: true, value: (l) => money(l.spend_usd) },
    { title: "max", num: true, value: (l) => money(l.max_usd) },
    { title: "used", num: true, value: (l) => percent(l.used_percent) },
    { title: "", value: bar },
    { title: "state", value: (l) => h("span", { class: `badge ${l.state}` }, l.state) },
    { title: "requests", num: true, value: (l) => count(l.requests) },
    { title: "next reset", value: (l) => when(l.next_reset) },
  ], limits, { testid: "limits-table", empty: "No limits yet: create them with the limits API or payi-otel limits" })));
  // widths through the CSSOM (the page's content security policy allows no inline style attributes)
  for (const span of root.querySelectorAll(".bar > span")) span.style.width = `${span.dataset.width}%`;
}
