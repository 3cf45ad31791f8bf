'use strict';

// This machine's platform as napi-rs names its binaries and packages (`linux-x64-gnu`,
// `darwin-arm64`, `win32-x64-msvc`...), and the error for a platform without a binary.

/**
 * @return {Boolean} Whether Node runs on musl's libc (Node's report names glibc otherwise).
 */
function isMusl() {
  if (process.platform !== 'linux') return false;
  try {
    const report = process.report.getReport();
    return !(report.header && report.header.glibcVersionRuntime);
  } catch {
    return false;
  }
}

/**
 * @return {String} The suffix of this platform's binary and package
 */
function platformSuffix() {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform === 'linux') return `${base}-${isMusl() ? 'musl' : 'gnu'}`;
  if (process.platform === 'win32') return `${base}-msvc`;
  return base;
}

/**
 * The error thrown when no binary loads: it names the platform and says how to get one.
 *
 * @param {Error} cause What the loader reported
 * @return {Error}
 */
function noBinaryError(cause) {
  const suffix = platformSuffix();
  const err = new Error(
    `ws-native has no native binary for this platform (${suffix}, Node ${process.version}).\n` +
      `The package ws-native-${suffix} provides it when it exists for the platform: check that\n` +
      'npm installed optional dependencies (not --no-optional / --omit=optional).\n' +
      'To build it from source instead (Rust 1.88+ and a C compiler), run\n' +
      '`node scripts/build.js` in the ws-native package directory, or `npm install` in a\n' +
      'git checkout of ws-native.'
  );
  err.code = 'ERR_WS_NATIVE_NO_BINARY';
  err.cause = cause;
  return err;
}

module.exports = { noBinaryError, platformSuffix };
