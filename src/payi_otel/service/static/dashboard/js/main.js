// The dashboard's shell: hash routes to views, the time window, the theme and the admin sign-in.
import { ApiError, setToken, takeTokenFromAddress } from "./api.js";
import { swapCharts } from "./charts.js";
import { h } from "./dom.js";
import * as limits from "./views/limits.js";
import * as organization from "./views/organization.js";
import * as overview from "./views/overview.js";
import * as requests from "./views/requests.js";
import * as useCases from "./views/usecases.js";

const ROUTES = {
  overview: overview.render,
  organization: organization.render,
  apps: organization.renderApp,
  limits: limits.render,
  "use-cases": useCases.render,
  requests: (root, ctx) => (ctx.param ? requests.renderDetail(root, ctx) : requests.render(root, ctx)),
};
const NAV = { apps: "organization" };
const view = document.getElementById("view");
const windowSelect = document.getElementById("window");
let rendering = 0;

function route() {
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  return { name: ROUTES[name] ? name : "overview", param: rest.length ? decodeURIComponent(rest.join("/")) : null,
    query: new URLSearchParams(search) };
}

async function render() {
  const mine = ++rendering;
  const { name, param, query } = route();
  delete document.body.dataset.ready;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === (NAV[name] || name));
  }
  const root = h("div", {});
  try {
    await ROUTES[name](root, { window: windowSelect.value, param, query, rerender: render });
    if (mine !== rendering) return;  // a newer render started meanwhile
    view.replaceChildren(root);
    swapCharts();
    document.body.dataset.ready = name;
  } catch (err) {
    if (mine !== rendering) return;
    if (err instanceof ApiError && err.status === 401) signIn(err.message);
    view.replaceChildren(h("h1", {}, "Cannot load this view"), h("p", { class: "error" }, err.message));
  }
}

function signIn(message) {
  const dialog = document.getElementById("signin");
  const error = document.getElementById("signin-error");
  error.textContent = message;
  error.hidden = !message;
  if (!dialog.open) dialog.showModal();
}

document.getElementById("signin-form").addEventListener("submit", () => {
  setToken(document.getElementById("signin-token").value.trim());
  render();
});

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("payi-otel-theme", theme);
}

document.getElementById("theme").addEventListener("click", () => {
  applyTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark");
  render();
});
windowSelect.value = localStorage.getItem("payi-otel-window") || "";
windowSelect.addEventListener("change", () => {
  localStorage.setItem("payi-otel-window", windowSelect.value);
  render();
});
applyTheme(localStorage.getItem("payi-otel-theme")
  || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
takeTokenFromAddress();
window.addEventListener("hashchange", render);
render();
