'use strict';

// Type-checks index.d.ts with the samples in __test__/types/ (see the
// tsconfig files there): the compat sample must compile against ws-native and,
// unchanged, against @types/ws.

const { describe, it } = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const typesDir = path.join(__dirname, 'types');

const configs = [
  ['ws-native typings (compat, ESM, ws-native additions)', 'tsconfig.json'],
  ['the same compat sample against @types/ws', 'tsconfig.ws.json'],
  ['the same ESM sample against @types/ws (index.d.mts)', 'tsconfig.ws-esm.json']
];

describe('typings', () => {
  for (const [title, config] of configs) {
    it(`type-checks ${title}`, () => {
      assert.ok(
        fs.existsSync(tsc),
        `${tsc} not found: typescript is a devDependency (run npm install)`
      );

      let status = 0;
      let output = '';

      try {
        execFileSync(
          process.execPath,
          [tsc, '-p', path.join(typesDir, config), '--pretty', 'false'],
          { cwd: root, encoding: 'utf8', stdio: 'pipe' }
        );
      } catch (err) {
        status = err.status === null ? 1 : err.status;
        output = `${err.stdout || ''}${err.stderr || ''}` || err.message;
      }

      if (status !== 0) console.error(`tsc -p ${config}:\n${output}`);
      assert.strictEqual(status, 0, `tsc -p ${config} failed:\n${output}`);
    });
  }
});
