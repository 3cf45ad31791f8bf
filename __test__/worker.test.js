'use strict';

// ws-native in worker_threads: a Worker loads the addon, serves a connection and
// exits. Each scenario runs in its own process (fixtures/worker-serve.js), so a failure
// cannot take the test runner down.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');

function scenario(mode) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(__dirname, 'fixtures', 'worker-serve.js'), mode], { timeout: 60000 }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop();
      try {
        resolve({ ...JSON.parse(line), exitCode: err ? err.code : 0, stderr });
      } catch {
        reject(new Error(`no result (exit ${err && err.code}): ${stdout} ${stderr}`));
      }
    });
  });
}

test('a Worker loads the addon, serves a connection, and exits by itself (main thread never loads it)', { timeout: 60000 }, async () => {
  const r = await scenario('worker-only');
  assert.deepEqual(r.steps, ['worker: listening', 'worker: open', 'worker: echo "hello worker"', 'worker: server closed', 'worker: worker exit 0']);
  assert.deepEqual(r.codes, [0]);
  assert.equal(r.exitCode, 0);
});

test('two Workers one after the other each load the addon and serve', { timeout: 60000 }, async () => {
  const r = await scenario('two-workers');
  assert.deepEqual(r.codes, [0, 0], r.steps.join('\n'));
  assert.ok(r.steps.includes('worker2: echo "hello worker2"'), r.steps.join('\n'));
});

// One events sink per Node environment: the main thread and a Worker each get their own
// connections' events, and a Worker's exit closes only its own servers and connections.
test('the main thread and a Worker both use the addon, before, during and after the Worker', { timeout: 60000 }, async () => {
  const r = await scenario('main-and-worker');
  for (const label of ['main-before', 'worker', 'main-during', 'main-after']) {
    assert.ok(r.steps.some((s) => s.startsWith(`${label}: echo`)), `${label} did not echo:\n${r.steps.join('\n')}`);
  }
});
