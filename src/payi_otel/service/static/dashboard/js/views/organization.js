// Organization: groups and their applications with usage, cost comparison, creating applications, and
// each application's settings page (key slots, rotation). Admin actions.
import { api } from "../api.js";
import { costBars } from "../charts.js";
import { card, h, stat, table } from "../dom.js";
import { count, day, money, ms, when } from "../format.js";

const appLink = (name) => h("a", { href: `#/apps/${encodeURIComponent(name)}` }, name);

function shownOnce(keys) {
  return h("div", { "data-testid": "new-keys" },
    h("p", { class: "notice" }, "Copy these keys now: they are shown only once (only their digests are stored)."),
    keys.map((k) => h("div", { class: "secret" }, h("span", {}, `Key ${k.slot}`),
      h("code", { "data-testid": `new-key-${k.slot}` }, k.key),
      h("button", { type: "button", class: "ghost", onclick: () => navigator.clipboard?.writeText(k.key) }, "Copy"))));
}

function createDialog(groups, onDone) {
  const error = h("p", { class: "error", hidden: true });
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}", "aria-label": "Application name" });
  const group = h("input", { name: "group", list: "groups", value: groups[0] || "default", required: true,
    pattern: "[A-Za-z0-9._\\-]{1,64}", "aria-label": "Application group" });
  const body = h("div", {});
  const dialog = h("dialog", { "data-testid": "create-dialog" });
  const close = () => { dialog.close(); dialog.remove(); onDone(); };
  const form = h("form", { onsubmit: async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      const created = await api("/api/v1/admin/applications", { method: "POST",
        body: { name: name.value.trim(), group: group.value.trim() } });
      body.replaceChildren(h("h2", {}, `Application ${created.name} created in ${created.group}`), shownOnce(created.keys),
        h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Done")));
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  } },
  h("h2", {}, "Create application"),
  h("label", {}, "Application name"), name,
  h("label", {}, "Application group"), group, h("datalist", { id: "groups" }, groups.map((g) => h("option", { value: g }))),
  error,
  h("div", { class: "actions" }, h("button", { type: "button", class: "ghost", onclick: close }, "Cancel"),
    h("button", { type: "submit" }, "Create")));
  body.append(form);
  dialog.append(body);
  document.body.append(dialog);
  dialog.showModal();
  name.focus();
}

export async function render(root, { window, rerender }) {
  const org = await api("/api/v1/admin/organization", { params: { since: window } });
  const apps = org.groups.flatMap((g) => g.applications);
  const ranked = [...apps].sort((a, b) => (b.cost_usd ?? 0) - (a.cost_usd ?? 0));
  const columns = [
    { title: "application", value: (a) => appLink(a.name) },
    { title: "requests", num: true, value: (a) => count(a.requests) },
    { title: "cost", num: true, value: (a) => money(a.cost_usd) },
    { title: "unpriced", num: true, value: (a) => count(a.unpriced_requests) },
    { title: "failures", num: true, value: (a) => count(a.failures) },
    { title: "p50", num: true, value: (a) => ms(a.latency_p50_ms) },
    { title: "p95", num: true, value: (a) => ms(a.latency_p95_ms) },
    { title: "keys", value: (a) => a.keys.map((k) => k.prefix).join(", ") || "—" },
  ];
  root.replaceChildren(
    h("div", { class: "row" }, h("h1", {}, "Organization"),
      h("button", { type: "button", "data-testid": "create-application",
        onclick: () => createDialog(org.groups.map((g) => g.name), rerender) }, "+ Create Application")),
    h("div", { class: "grid" },
      card("Cost by application", { wide: true }, costBars(ranked.map((a) => a.name),
        ranked.map((a) => a.cost_usd ?? 0), "chart-applications", { short: apps.length < 6 })),
      org.groups.map((g) => card(`Group ${g.name}`, { wide: true, testid: `group-${g.name}` },
        h("p", { class: "muted" }, `${count(g.applications.length)} applications · ${count(g.requests)} requests · `
          + `${money(g.cost_usd)}`),
        table(columns, g.applications, { testid: `apps-${g.name}` }))),
    ),
  );
}

export async function renderApp(root, { window, param }) {
  const org = await api("/api/v1/admin/organization", { params: { since: window } });
  const app = org.groups.flatMap((g) => g.applications).find((a) => a.name === param);
  if (!app) {
    root.replaceChildren(h("h1", {}, "Application not found"), h("p", {}, `No application named ${param}.`));
    return;
  }
  const issued = h("div", {});
  const rotate = async (slot) => {
    const verb = app.keys.some((k) => k.slot === slot) ? "Rotate" : "Issue";
    if (!confirm(`${verb} key ${slot} of ${app.name}? Its current key stops working at once.`)) return;
    const result = await api(`/api/v1/admin/applications/${encodeURIComponent(app.name)}/keys/${slot}`, { method: "POST" });
    issued.replaceChildren(shownOnce([result]));
  };
  const slots = [1, 2].map((slot) => app.keys.find((k) => k.slot === slot) || { slot, prefix: null, created: null });
  root.replaceChildren(
    h("div", { class: "row" }, h("h1", {}, `${app.name} · settings`), h("a", { href: "#/organization" }, "← Organization")),
    h("div", { class: "stats" },
      stat("Group", app.group), stat("Requests", count(app.requests)), stat("Cost", money(app.cost_usd)),
      stat("Unpriced", count(app.unpriced_requests)), stat("Failures", count(app.failures)),
      stat("Created", day(app.created))),
    h("div", { class: "grid" },
      card("API keys", { wide: true, testid: "key-slots" },
        h("p", { class: "muted" }, "Every application has two keys, rotated independently: issue the new key to your "
          + "services in the other slot first, then rotate the old one."),
        table([
          { title: "slot", value: (k) => `Key ${k.slot}` },
          { title: "key", value: (k) => (k.prefix ? h("code", {}, k.prefix) : h("span", { class: "muted" }, "empty")) },
          { title: "issued", value: (k) => when(k.created) },
          { title: "", value: (k) => h("button", { type: "button", class: "ghost", "data-testid": `rotate-${k.slot}`,
            onclick: () => rotate(k.slot) }, k.prefix ? "Rotate" : "Issue") },
        ], slots),
        issued),
      card("Data", { wide: true },
        h("p", {}, h("a", { href: `#/requests?application=${encodeURIComponent(app.name)}` }, "Requests of this application"),
          " · ", h("a", { href: "#/limits" }, "Limits"), " · ", h("a", { href: "#/use-cases" }, "Use cases"))),
    ),
  );
}
