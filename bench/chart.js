#!/usr/bin/env node
'use strict';

// Draws a results file of bench/run.js as an SVG bar chart: one group of bars per table row
// (a workload and one of its metrics), one bar per implementation, each as its ratio to plain
// `ws` (ws = 1), so that rows in different units share one axis. Ratios are computed as
// run.js computes them: throughput ÷ ws's, and ws's ÷ this for latency and memory, so a
// longer bar is better on every row.
//
//   node bench/chart.js [--in FILE] [--out FILE] [--impls LIST] [--all]
//
// --in     results file (default bench/results/latest.json)
// --out    SVG to write (default bench/results/chart.svg)
// --impls  columns to draw, in order (default ws,ws+native-helpers,ws-native; a column the
//          file lacks is left out)
// --all    every metric of every workload (default: the rows of the README's table)
//
// No dependencies. Workloads with variants (deflate, deflate-idle) have no per-implementation
// columns and are left out.

const fs = require('fs');
const path = require('path');

const BENCH = __dirname;
const BASELINE = 'ws';

// The rows drawn by default, per workload: the first metric unless listed here. Bulk rows
// show MB/s (the same ratio as msg/s, in the unit the README's table uses).
const PICK = {
  latency: ['p50_us', 'p99_us'],
  bulk16k: ['mbytes_per_sec'],
  bulk1m: ['mbytes_per_sec'],
  connections: ['connections_per_sec', 'rss_per_conn_kib'],
};

const LABELS = { 'ws+native-helpers': 'ws + bufferutil (ws+native-helpers)' };
// Text drawn over the grid gets a white outline, so that grid lines do not cross it.
const HALO = ' stroke="#ffffff" stroke-width="4" stroke-linejoin="round" paint-order="stroke"';
const COLORS = ['#9a9a9a', '#4c78a8', '#f58518', '#54a24b', '#b279a2', '#72b7b2'];

function parseArgs(argv) {
  const o = {
    in: path.join(BENCH, 'results/latest.json'),
    out: path.join(BENCH, 'results/chart.svg'),
    impls: ['ws', 'ws+native-helpers', 'ws-native'],
    all: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--in') o.in = argv[++i];
    else if (a === '--out') o.out = argv[++i];
    else if (a === '--impls') o.impls = argv[++i].split(',').filter(Boolean);
    else if (a === '--all') o.all = true;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node bench/chart.js [--in results.json] [--out chart.svg] [--impls ws,ws+native-helpers,ws-native] [--all]');
      process.exit(0);
    } else {
      console.error(`chart.js: unknown argument ${a} (see --help)`);
      process.exit(2);
    }
  }
  return o;
}

/** As run.js formats a value of metric `key`. */
function fmtNum(v, key) {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  if (/_us$/.test(key)) return v >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1);
  if (/kib$/.test(key)) return v.toFixed(2);
  if (/mbytes/.test(key)) return v.toFixed(0);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(1);
}

/** As run.js: >1 is better than ws, whichever way the metric goes. */
function ratio(v, base, dir) {
  if (!Number.isFinite(v) || !Number.isFinite(base) || v <= 0 || base <= 0) return null;
  return dir === 'higher' ? v / base : base / v;
}

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The rows to draw: `{ title, label, unit, bars: [{ impl, value, ratio, error }] }`. */
function rows(results, impls, all) {
  const out = [];
  for (const w of results.workloads) {
    if (w.variants || !w.impls || !w.impls[BASELINE] || w.impls[BASELINE].error) {
      if (w.variants) console.error(`chart.js: ${w.id}: rows per variant, not per implementation; left out`);
      else console.error(`chart.js: ${w.id}: no ${BASELINE} result to compare with; left out`);
      continue;
    }
    const keys = all ? w.metrics.map((m) => m[0]) : PICK[w.id] || [w.metrics[0][0]];
    for (const key of keys) {
      const m = w.metrics.find((x) => x[0] === key);
      if (!m) continue;
      const [, unit, dir] = m;
      const base = w.impls[BASELINE].median[key];
      const bars = impls
        .filter((n) => w.impls[n])
        .map((n) => {
          const s = w.impls[n];
          if (s.error) return { impl: n, value: null, ratio: null, error: s.error };
          const value = s.median[key];
          return { impl: n, value, ratio: n === BASELINE ? 1 : ratio(value, base, dir), error: null };
        });
      out.push({ title: w.title, key, unit, dir, bars });
    }
  }
  return out;
}

/** A round axis end at or above `max`, and its grid step. */
function axis(max) {
  const steps = [0.25, 0.5, 1, 2, 5, 10, 20, 50];
  for (const step of steps) {
    const end = Math.ceil(max / step) * step;
    if (end / step <= 14) return { end, step };
  }
  return { end: Math.ceil(max), step: Math.ceil(max / 10) };
}

function svg(results, data, impls, source) {
  const present = impls.filter((n) => data.some((r) => r.bars.some((b) => b.impl === n)));
  const color = (n) => COLORS[present.indexOf(n) % COLORS.length];
  const W = 980;
  const left = 24;
  const right = 230; // room for the value after the longest bar
  const plotW = W - left - right;
  const barH = 14;
  const barGap = 3;
  const labelH = 20;
  const groupGap = 12;
  const top = 124;
  const maxRatio = Math.max(1, ...data.flatMap((r) => r.bars.map((b) => b.ratio || 0)));
  const { end, step } = axis(maxRatio * 1.02);
  const x = (r) => left + (r / end) * plotW;
  const groupH = (r) => labelH + r.bars.length * (barH + barGap) + groupGap;
  const plotH = data.reduce((s, r) => s + groupH(r), 0);
  const H = top + plotH + 56;

  const m = results.meta || {};
  const date = m.date ? m.date.slice(0, 10) : 'unknown date';
  const machine = `${m.cpus || '?'} CPU (${m.cpu_model || '?'}), ${m.mem_gib || '?'} GiB`;
  const runs = `${m.rounds || '?'} round(s) × ${m.warmup_s ?? '?'} s warm-up + ${m.duration_s ?? '?'} s, medians`;

  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${left}" y="26" font-size="16" font-weight="bold" fill="#222">ws-native benchmark: each implementation as a ratio to plain ws (ws = 1×, longer is better)</text>`);
  out.push(`<text x="${left}" y="46" fill="#444">${esc(`${date}, node ${m.node || '?'}, ws ${m.ws || '?'}, ${machine}; ${runs}; from ${source}`)}</text>`);
  out.push(`<text x="${left}" y="64" fill="#444">throughput ÷ ws's throughput; for latency and memory rows, ws's value ÷ this one. After each ratio: the measured median.</text>`);

  // legend
  let lx = left;
  for (const n of present) {
    const label = LABELS[n] || n;
    out.push(`<rect x="${lx}" y="78" width="14" height="14" fill="${color(n)}"/>`);
    out.push(`<text x="${lx + 20}" y="90" fill="#222">${esc(label)}</text>`);
    lx += 20 + label.length * 6.2 + 24;
  }

  // grid: vertical lines at each step, drawn behind each group's bars (not across its title)
  const ticks = [];
  for (let r = 0; r <= end + 1e-9; r += step) ticks.push(+r.toFixed(6));
  if (!ticks.includes(1)) ticks.push(1);
  const gridLines = (y0, y1) => {
    for (const r of ticks) {
      const gx = x(r).toFixed(1);
      const one = r === 1;
      out.push(`<line x1="${gx}" y1="${y0}" x2="${gx}" y2="${y1}" stroke="${one ? '#555' : '#e2e2e2'}" stroke-width="${one ? 1.5 : 1}"${one ? ' stroke-dasharray="4 3"' : ''}/>`);
    }
  };
  const tickLabels = (ty) => {
    for (const r of ticks) out.push(`<text x="${x(r).toFixed(1)}" y="${ty}" text-anchor="middle" fill="${r === 1 ? '#222' : '#666'}">${r}×</text>`);
  };
  tickLabels(top - 6);

  // rows
  let y = top;
  for (const r of data) {
    out.push(`<text x="${left}" y="${y + 13}" font-weight="bold" fill="#222"${HALO}>${esc(`${r.title} — ${r.unit}${r.dir === 'lower' ? ' (lower is better)' : ''}`)}</text>`);
    y += labelH;
    gridLines(y - 2, y + r.bars.length * (barH + barGap) - barGap + 2);
    for (const b of r.bars) {
      const label = LABELS[b.impl] || b.impl;
      if (b.ratio === null) {
        out.push(`<text x="${left + 4}" y="${y + barH - 3}" fill="#a00"${HALO}>${esc(`${label}: n/a${b.error ? ` (${b.error})` : ''}`)}</text>`);
      } else {
        const w = Math.max(1, x(b.ratio) - left);
        const text = `${b.ratio.toFixed(2)}× · ${fmtNum(b.value, r.key)} ${r.unit.split(' ').pop()}`;
        out.push(`<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color(b.impl)}"><title>${esc(`${label}: ${text}`)}</title></rect>`);
        out.push(`<text x="${(left + w + 6).toFixed(1)}" y="${y + barH - 3}" fill="#222"${HALO}${b.impl === 'ws-native' ? ' font-weight="bold"' : ''}>${esc(text)}</text>`);
      }
      y += barH + barGap;
    }
    y += groupGap;
  }
  tickLabels(y + 6);
  out.push(`<text x="${left}" y="${H - 10}" fill="#888">Drawn by bench/chart.js from the results file; the method is in bench/README.md.</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const results = JSON.parse(fs.readFileSync(o.in, 'utf8'));
  if (!Array.isArray(results.workloads)) throw new Error(`${o.in}: not a bench/run.js results file (no workloads)`);
  const data = rows(results, o.impls, o.all);
  if (data.length === 0) {
    console.error(`chart.js: ${o.in} has no row with a ${BASELINE} column to draw`);
    process.exit(1);
  }
  const source = path.relative(path.join(BENCH, '..'), path.resolve(o.in)) || o.in;
  fs.writeFileSync(o.out, svg(results, data, o.impls, source));
  console.log(`chart.js: ${data.length} rows from ${o.in} -> ${o.out}`);
}

main();
