'use strict';

// The benchmark's smoke mode: every workload once, for a fraction of a second, against ws and
// ws-native. It measures nothing (no thresholds: benchmarks never fail CI on a noisy machine);
// it keeps bench/ from rotting. The first run builds the load generator and the Rust echo
// server (cargo) and installs bench/'s own dependencies (npm).

const test = require('node:test');
const assert = require('node:assert');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');

test('bench/run.js --smoke runs every workload against ws and ws-native', { timeout: 15 * 60 * 1000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-native-bench-'));
  const out = path.join(dir, 'smoke.json');
  try {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bench/run.js'), '--smoke', '--impls', 'ws,ws-native', '--out', out], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 14 * 60 * 1000,
      maxBuffer: 64 * 1024 * 1024
    });
    assert.strictEqual(r.status, 0, `bench exited with ${r.status} ${r.signal || ''}\n${r.stderr.slice(-4000)}`);
    assert.match(r.stdout, /\| workload \| metric \|/, 'the results table is printed');

    const results = JSON.parse(fs.readFileSync(out, 'utf8'));
    const ids = results.workloads.map((w) => w.id);
    for (const id of ['latency', 'small', 'text1k', 'bulk16k', 'bulk1m', 'broadcast', 'broadcast16', 'connections', 'wss', 'client', 'deflate', 'deflate-idle']) {
      assert.ok(ids.includes(id), `workload ${id} ran`);
    }
    for (const w of results.workloads) {
      for (const [name, s] of Object.entries(w.impls)) {
        assert.ok(!s.error, `${w.id} / ${name}: ${s.error}`);
        assert.strictEqual(s.ok_runs, 1, `${w.id} / ${name} completed its run`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('bench/js-floor.js measures the JS objects of idle connections for ws and ws-native', { timeout: 60 * 1000 }, () => {
  for (const impl of ['ws-native', 'ws']) {
    // ws resolves from bench/node_modules (installed by the test above).
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bench/js-floor.js'), '--impl', impl, '--conns', '300', '--idle', '0'], {
      cwd: path.join(ROOT, 'bench'),
      encoding: 'utf8',
      timeout: 30 * 1000
    });
    assert.strictEqual(r.status, 0, `js-floor exited with ${r.status} ${r.signal || ''}\n${r.stderr.slice(-2000)}`);
    const out = JSON.parse(r.stdout);
    assert.strictEqual(out.impl, impl);
    assert.strictEqual(out.conns, 300);
    assert.ok(Number.isFinite(out.rss_per_conn_bytes));
  }
});

test('bench/zlib-codec.js times Node\'s zlib on the load generator\'s own payloads', { timeout: 60 * 1000 }, () => {
  // the load generator is built by the first test of this file
  for (const payload of ['--json', '--words']) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bench/zlib-codec.js'), payload, '--conns', '2', '--seconds', '0.2'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 30 * 1000
    });
    assert.strictEqual(r.status, 0, `zlib-codec exited with ${r.status} ${r.signal || ''}\n${r.stderr.slice(-2000)}`);
    const out = JSON.parse(r.stdout);
    assert.strictEqual(out.payload, payload.slice(2));
    assert.ok(out.messages > 0 && Number.isFinite(out.server_floor_cpu_us_per_msg));
    // the texts compress (to about a fifth for the JSON, a third for the words)
    assert.ok(out.server_tx_ratio > 0.1 && out.server_tx_ratio < 0.5, `ratio ${out.server_tx_ratio}`);
  }
});
