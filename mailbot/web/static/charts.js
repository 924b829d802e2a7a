"use strict";
// The inbox's charts: the last 24 hours from /api/stats, drawn as SVG built node by node
// (no markup from strings), redrawn every minute.

const SVG = "http://www.w3.org/2000/svg";
const W = 300, H = 80, PAD = 12;
const COLOURS = { delivered: "#2e8b57", rejected: "#c0392b", bounced: "#8e44ad",
  quarantined: "#d68910", failed: "#7f8c8d", pending: "#bdc3c7", processing: "#95a5a6" };

function shape(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function label(max, unit) {
  return shape("text", { x: 2, y: 9, "font-size": 8, fill: "#667" }, `${max}${unit}`);
}

function volume(svg, hours) {
  const totals = hours.map((h) => Object.values(h.by_status).reduce((a, b) => a + b, 0));
  const max = Math.max(1, ...totals);
  const w = (W - PAD) / hours.length;
  const parts = [label(max, "")];
  hours.forEach((h, i) => {
    let y = H;
    for (const [status, n] of Object.entries(h.by_status)) {
      const height = (n / max) * (H - PAD);
      y -= height;
      const bar = shape("rect", { x: PAD + i * w, y, width: Math.max(w - 1, 1), height,
        fill: COLOURS[status] || "#999", "data-status": status });
      bar.append(shape("title", {}, `${h.hour}: ${n} ${status}`));
      parts.push(bar);
    }
  });
  svg.replaceChildren(...parts);
}

function line(svg, hours, series, unit) {
  const values = hours.flatMap((h) => series.map((s) => h[s.key])).filter((v) => v !== null);
  const max = Math.max(unit === "%" ? 0.01 : 1, ...values);
  const w = (W - PAD) / Math.max(hours.length - 1, 1);
  const parts = [label(unit === "%" ? Math.round(max * 100) : Math.round(max), unit)];
  for (const s of series) {
    const points = hours.map((h, i) => h[s.key] === null ? null
      : `${PAD + i * w},${H - (h[s.key] / max) * (H - PAD)}`).filter(Boolean);
    if (points.length) parts.push(shape("polyline", { points: points.join(" "), fill: "none",
      stroke: s.colour, "stroke-width": 1.5 }));
    for (const point of points) { // a single hour is a dot, not an invisible line
      const [cx, cy] = point.split(",");
      parts.push(shape("circle", { cx, cy, r: 2, fill: s.colour }));
    }
  }
  if (!values.length) parts.push(shape("text", { x: W / 2, y: H / 2, "font-size": 9,
    "text-anchor": "middle", fill: "#667" }, "nothing yet"));
  svg.replaceChildren(...parts);
}

async function charts() {
  const answer = await fetch("/api/stats?hours=24", { headers: { accept: "application/json" } });
  if (!answer.ok) return;
  const { hours } = await answer.json();
  volume(document.getElementById("chart-volume"), hours);
  line(document.getElementById("chart-spam"), hours, [{ key: "spam_rate", colour: "#d68910" }], "%");
  line(document.getElementById("chart-latency"), hours,
    [{ key: "latency_p50_ms", colour: "#2457c5" }, { key: "latency_p95_ms", colour: "#c0392b" }], " ms");
}

charts().catch(() => {});
setInterval(() => charts().catch(() => {}), 60000);
