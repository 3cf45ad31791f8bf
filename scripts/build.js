'use strict';

// Builds the native addon from source, in release mode. In a git checkout `npm install` runs
// it (the `prepare` script), with the napi CLI, which also writes the binding loader
// (binding.js); an installed package never runs it by itself (its binary comes from its
// platform package), but it can be run there by hand on a platform without a prebuilt binary:
// without the napi CLI it builds with cargo and puts the addon where the loader looks.
// Extra arguments go to the build, e.g. `--features diagnostics` for the test build.

const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const extra = process.argv.slice(2);

const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' });
if (cargo.error || cargo.status !== 0) {
  console.error(
    '\nws-native: cargo was not found on PATH.\n' +
      'Building ws-native from source needs the Rust toolchain (1.88 or newer:\n' +
      'https://rustup.rs, or your distribution\'s "cargo" package) and a C compiler.\n'
  );
  process.exit(1);
}

let cli = null;
try {
  const pkg = require.resolve('@napi-rs/cli/package.json', { paths: [root] });
  cli = path.join(path.dirname(pkg), require(pkg).bin.napi);
} catch {
  // Not installed (an installed package has no devDependencies): cargo alone.
}

if (cli !== null) {
  const args = [cli, 'build', '--platform', '--release', '--js', 'binding.js', '--dts', 'binding.d.ts', ...extra];
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('ws-native: building the native addon failed (see the cargo output above).');
    process.exit(r.status || 1);
  }
  process.exit(0);
}

const r = spawnSync('cargo', ['build', '--release', ...extra], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('ws-native: building the native addon failed (see the cargo output above).');
  process.exit(r.status || 1);
}
const built = { linux: 'libws_native.so', darwin: 'libws_native.dylib', win32: 'ws_native.dll' }[process.platform];
const { platformSuffix } = require('../lib/platform');
const target = path.join(root, `ws-native.${platformSuffix()}.node`);
fs.copyFileSync(path.join(root, 'target', 'release', built), target);
console.log(`ws-native: built ${path.basename(target)}`);
