'use strict';

// ws-native in worker_threads (issue 8): a Worker loads the addon, serves a connection and
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

// Known limitation, not fixed here: the engine has one process-wide event sink (the
// threadsafe function registered by `init`) and one runtime. When a Worker loads the addon
// while the main thread uses it, the Worker's `init` replaces the sink, so the main thread's
// connections get no more events: a `ws` client connecting to a main-thread server while the
// Worker runs never gets its 101 (the upgrade request is dispatched to the Worker's JS, which
// does not know that server), "main-during: no echo in 5 s"; when the Worker exits, its cleanup
// hook clears the sink and shuts the runtime down, and the main thread stays deaf
// ("main-after: no echo", and wss.close() never calls back).
test('the main thread and a Worker both use the addon', { todo: 'one global event sink: a Worker that loads the addon takes the main thread\'s events, and its exit stops the engine for the main thread', timeout: 60000 }, async () => {
  const r = await scenario('main-and-worker');
  for (const label of ['main-before', 'worker', 'main-during', 'main-after']) {
    assert.ok(r.steps.some((s) => s.startsWith(`${label}: echo`)), `${label} did not echo:\n${r.steps.join('\n')}`);
  }
});
