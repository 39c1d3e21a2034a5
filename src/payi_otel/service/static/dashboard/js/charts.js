// Charts through the vendored Chart.js (window.Chart), coloured from the theme's CSS variables.
import { h } from "./dom.js";
import { money } from "./format.js";

let shown = new Set();  // charts of the view on screen
let pending = new Set();  // charts of the view being built

function themeColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function palette() {
  return [1, 2, 3, 4, 5, 6].map((i) => themeColor(`--chart-${i}`));
}

// When a new view replaces the old one on screen, the old view's charts are destroyed.
export function swapCharts() {
  for (const chart of shown) chart.destroy();
  shown = pending;
  pending = new Set();
}

function make(type, data, options, { short = false, testid = null } = {}) {
  const canvas = h("canvas", { role: "img", "aria-label": testid || "chart" });
  const box = h("div", { class: short ? "chart short" : "chart", "data-testid": testid }, canvas);
  const text = themeColor("--muted");
  const grid = themeColor("--chart-grid");
  const scales = {};
  for (const [axis, own] of Object.entries(options.scales || { x: {}, y: {} })) {
    scales[axis] = { ...own, ticks: { color: text, ...(own.ticks || {}) }, grid: { color: grid, ...(own.grid || {}) } };
  }
  const chart = new window.Chart(canvas, {
    type,
    data,
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      ...options,
      scales,
      plugins: { legend: { labels: { color: text } }, ...(options.plugins || {}) },
    },
  });
  pending.add(chart);
  return box;
}

const moneyTicks = { callback: (value) => money(value) };

// Cost per period (bars) with the number of requests (line, right axis).
export function costOverTime(labels, costs, requests, testid) {
  const [c1, c2] = palette();
  return make("bar", {
    labels,
    datasets: [
      { label: "cost", data: costs, backgroundColor: c1, yAxisID: "y" },
      { label: "requests", data: requests, type: "line", borderColor: c2, backgroundColor: c2, yAxisID: "y1",
        pointRadius: 2, tension: 0.2 },
    ],
  }, {
    scales: {
      x: {},
      y: { beginAtZero: true, ticks: moneyTicks },
      y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, ticks: { precision: 0 } },
    },
    plugins: {
      tooltip: { callbacks: { label: (ctx) => (ctx.dataset.yAxisID === "y" ? `cost: ${money(ctx.raw)}`
        : `requests: ${ctx.raw}`) } },
    },
  }, { testid });
}

// Cost by a dimension, largest first (horizontal bars).
export function costBars(labels, costs, testid, { short = false } = {}) {
  const colors = palette();
  return make("bar", {
    labels,
    datasets: [{ label: "cost", data: costs, backgroundColor: labels.map((_, i) => colors[i % colors.length]) }],
  }, {
    indexAxis: "y",
    scales: { x: { beginAtZero: true, ticks: moneyTicks }, y: {} },
    plugins: { legend: { display: false }, tooltip: { callbacks: { label: (ctx) => money(ctx.raw) } } },
  }, { testid, short });
}
