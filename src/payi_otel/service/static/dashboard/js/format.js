// Numbers as people read them. Costs follow `payi-otel report`: "$" and thousands separators, cents
// from $1 up, and three significant digits below $1, so a tiny real cost never reads as $0.00.
const COST_DIGITS = 3;
const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function money(value) {
  if (value === null || value === undefined) return "—";
  const sign = value < 0 ? "-" : "";
  const abs = Math.abs(value);
  if (abs === 0) return "$0.00";
  if (abs >= 0.9995) return `${sign}$${cents(abs)}`;
  const leadingZeros = -Math.floor(Math.log10(abs)) - 1;
  const digits = Math.max(2, leadingZeros + COST_DIGITS);
  if (digits > 100) return `${sign}$${abs.toPrecision(COST_DIGITS)}`;
  return `${sign}$${abs.toFixed(digits)}`;
}

// Rounded from the number's exact binary value, as Python's format() does (Intl rounds 1.005 up, Python down).
function cents(abs) {
  if (abs >= 1e21) return integer.format(abs);
  const [whole, fraction] = abs.toFixed(2).split(".");
  return `${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",")}.${fraction}`;
}

export function count(value) {
  return value === null || value === undefined ? "—" : integer.format(value);
}

export function ms(value) {
  return value === null || value === undefined ? "—" : `${integer.format(value)} ms`;
}

export function percent(value) {
  return value === null || value === undefined ? "—" : `${value.toFixed(1)}%`;
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

// A value of a report dimension; requests without one are grouped under "(none)".
export function label(value) {
  return value === null || value === undefined || value === "" ? "(none)" : String(value);
}

export function day(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleDateString(undefined, { dateStyle: "medium" });
}
