'use strict';

// Builds the native addon from source, in release mode, with the napi CLI. Run by
// `npm install` (there is no prebuilt binary to download).

const { spawnSync } = require('child_process');
const path = require('path');

const root = path.join(__dirname, '..');

const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' });
if (cargo.error || cargo.status !== 0) {
  console.error(
    '\nws-native: cargo was not found on PATH.\n' +
      'ws-native builds its Rust engine from source when it is installed.\n' +
      'Install the Rust toolchain (https://rustup.rs, or your distribution\'s\n' +
      '"cargo" package), make sure `cargo --version` works, and run\n' +
      '`npm install` again.\n'
  );
  process.exit(1);
}

let cli;
try {
  const pkg = require.resolve('@napi-rs/cli/package.json', { paths: [root] });
  cli = path.join(path.dirname(pkg), require(pkg).bin.napi);
} catch {
  console.error('ws-native: @napi-rs/cli is missing; run `npm install` first.');
  process.exit(1);
}

const args = [
  cli,
  'build',
  '--platform',
  '--release',
  '--js',
  'binding.js',
  '--dts',
  'binding.d.ts',
  // e.g. `--features diagnostics` for the test build
  ...process.argv.slice(2)
];
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('ws-native: building the native addon failed (see the cargo output above).');
  process.exit(r.status || 1);
}
