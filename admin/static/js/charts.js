// Time-series charts with the vendored uPlot (a global of its IIFE build).
// Each chart's container records how many points it drew (data-points), from uPlot's own data.

import { clear, h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

// xs: epoch seconds; series: [{label, values}] of the same length as xs.
// xRange: [from, to] epoch seconds to show whatever the data covers (a day of hourly buckets).
export function lineChart(container, xs, series, { yLabel = "", empty = "no data in this period", xRange = null } = {}) {
  const old = container.uplot;
  if (old) old.destroy();
  container.uplot = null;
  const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null && v !== undefined).length, 0);
  if (!xs.length || !points) {
    container.dataset.points = "0";
    clear(container, h("div", { class: "empty" }, empty));
    return null;
  }
  clear(container);
  const width = Math.max(280, container.clientWidth || 400);
  const opts = {
    width,
    height: 180,
    cursor: { drag: { x: true, y: false } },
    scales: { x: xRange ? { time: true, range: () => xRange } : { time: true } },
    axes: [{}, { label: yLabel, size: 55 }],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        points: { show: xs.length < 60 },
        spanGaps: false,
      })),
    ],
  };
  const chart = new window.uPlot(opts, [xs, ...series.map((s) => s.values)], container);
  container.uplot = chart;
  // What uPlot holds, not what was asked for: the tests read this.
  container.dataset.points = String(
    chart.data.slice(1).reduce((n, ys) => n + ys.filter((v) => v !== null && v !== undefined).length, 0),
  );
  return chart;
}

export function chartCard(title, testid, note = null) {
  const box = h("div", { class: "chart", "data-testid": testid });
  const card = h("section", { class: "card" }, h("h2", {}, title), box, note ? h("p", { class: "note" }, note) : null);
  return { card, box };
}

// The hour buckets of the last day: from the start of the hour 23 hours ago to the next hour.
export function lastDay() {
  const hour = Math.floor(Date.now() / 3600000) * 3600;
  return [hour - 23 * 3600, hour + 3600];
}
