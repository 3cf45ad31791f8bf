'use strict';

// `npm run pack`: writes to dist/ the tarballs that would be published, in napi-rs's layout:
// the main package `ws-native` (JavaScript, typings and the binding loader, with one
// optional dependency per platform) and the platform package this machine builds
// (`ws-native-linux-x64-gnu`: only its `.node` file and a package.json with os, cpu and
// libc). The other platforms' binaries come from the release workflow
// (.github/workflows/release.yml), which runs the same napi commands over all targets.
//
// The work happens in dist/stage, a copy of the files the main package ships, so that the
// napi CLI's commands (create-npm-dirs, artifacts, pre-publish) never rewrite the
// repository's own package.json.

const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const dist = path.join(root, 'dist');
const stage = path.join(dist, 'stage');
const napi = path.join(root, 'node_modules', '.bin', 'napi');
const pkg = require(path.join(root, 'package.json'));

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`ws-native pack: ${cmd} ${args.join(' ')} failed`);
    process.exit(r.status || 1);
  }
}

/** The Rust target of this machine, as napi-rs names its targets. */
function hostTarget() {
  const out = execFileSync('rustc', ['-vV'], { encoding: 'utf8' });
  return /^host: (\S+)$/m.exec(out)[1];
}

// A release build without the diagnostics feature (what users get).
run(process.execPath, [path.join(__dirname, 'build.js')], root);

fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(stage, { recursive: true });
for (const entry of pkg.files) {
  const from = path.join(root, entry);
  if (fs.existsSync(from)) fs.cpSync(from, path.join(stage, entry), { recursive: true });
}
for (const f of ['package.json', 'README.md', 'LICENSE']) {
  if (fs.existsSync(path.join(root, f))) fs.copyFileSync(path.join(root, f), path.join(stage, f));
}
// The stage's package.json: the published one (no scripts that build, no devDependencies).
const published = JSON.parse(fs.readFileSync(path.join(stage, 'package.json'), 'utf8'));
delete published.scripts;
delete published.devDependencies;
fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(published, null, 2) + '\n');

// Only the target this machine builds is packed here.
const config = path.join(stage, 'napi.pack.json');
fs.writeFileSync(config, JSON.stringify({ ...pkg.napi, targets: [hostTarget()] }, null, 2));
const artifacts = path.join(stage, 'artifacts');
fs.mkdirSync(artifacts);
for (const f of fs.readdirSync(root)) {
  if (f.endsWith('.node')) fs.copyFileSync(path.join(root, f), path.join(artifacts, f));
}
run(napi, ['create-npm-dirs', '--cwd', stage, '-c', config], root);
run(napi, ['artifacts', '--cwd', stage, '-c', config, '-d', 'artifacts'], root);
// Adds the platform packages to the main package's optionalDependencies (publishing them is
// the release workflow's).
run(napi, ['pre-publish', '--cwd', stage, '-c', config, '--skip-optional-publish', '-t', 'npm'], root);

for (const dir of [stage, ...fs.readdirSync(path.join(stage, 'npm')).map((d) => path.join(stage, 'npm', d))]) {
  run('npm', ['pack', '--ignore-scripts', '--pack-destination', dist], dir);
}
fs.rmSync(stage, { recursive: true, force: true });
console.log(`ws-native pack: ${fs.readdirSync(dist).join(', ')} in dist/`);
