// Building elements without innerHTML: every value from the service is text, never markup.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// A table: columns [{title, value(row) -> text|Node, num?}], optional footer row and row click.
export function table(columns, rows, { footer = null, onRow = null, testid = null, empty = "No data" } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title))));
  const cells = (row) => columns.map((c) => h("td", { class: c.num ? "num" : null }, c.value(row)));
  const body = h("tbody", {}, rows.length ? rows.map((row) =>
    h("tr", { class: onRow ? "link" : null, onclick: onRow ? () => onRow(row) : null }, cells(row)),
  ) : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty)));
  const total = footer ? { ...footer, isTotal: true } : null;  // a column may label it "Total"
  const foot = total ? h("tfoot", {}, h("tr", { "data-testid": testid ? `${testid}-total` : null }, cells(total))) : null;
  return h("div", { class: "table-wrap" }, h("table", { "data-testid": testid }, head, body, foot));
}

export function card(title, { wide = false, third = false, testid = null } = {}, ...children) {
  const cls = ["card", wide ? "wide" : "", third ? "third" : ""].join(" ").trim();
  return h("section", { class: cls, "data-testid": testid }, h("h2", {}, title), ...children);
}

export function stat(labelText, value, sub = null, testid = null) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, labelText),
    h("div", { class: "value", "data-testid": testid }, value), sub ? h("div", { class: "sub" }, sub) : null);
}
