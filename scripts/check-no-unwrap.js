#!/usr/bin/env node
'use strict';

// Fails when `unwrap()` or `expect(...)` is called in src/ outside test code. A panic in the
// engine must never reach Node, and peer data must never be able to cause one (issue 8).
//
// Test code is skipped: any item under `#[cfg(test)]` or `#[test]` (a module, a function),
// and whole files included as `#[cfg(test)] mod name;`.
//
// Allow-list: a justified call carries `// unwrap-ok: <reason>` on the same line, e.g.
//     let n = u16::try_from(x).unwrap(); // unwrap-ok: x < 1000 checked above, not peer data
// The reason must say why the value cannot fail (and that it is not peer data).
//
// Usage: node scripts/check-no-unwrap.js [dir]   (exit code 1 and a list when it fails)

const fs = require('fs');
const path = require('path');

/** Blanks comments and the contents of string and char literals (newlines kept). */
function stripCode(src) {
  const out = src.split('');
  const blank = (from, to) => {
    for (let k = from; k < to; k++) if (out[k] !== '\n') out[k] = ' ';
  };
  let i = 0;
  const n = src.length;
  while (i < n) {
    const c = src[i];
    const next = src[i + 1];
    if (c === '/' && next === '/') {
      let j = src.indexOf('\n', i);
      if (j < 0) j = n;
      blank(i, j);
      i = j;
    } else if (c === '/' && next === '*') {
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (src[j] === '/' && src[j + 1] === '*') (depth++, (j += 2));
        else if (src[j] === '*' && src[j + 1] === '/') (depth--, (j += 2));
        else j++;
      }
      blank(i, j);
      i = j;
    } else if ((c === 'r' || (c === 'b' && next === 'r')) && /^b?r#*"/.test(src.slice(i, i + 260)) && !/[\w]/.test(src[i - 1] || '')) {
      const m = /^b?r(#*)"/.exec(src.slice(i));
      const end = '"' + m[1];
      let j = src.indexOf(end, i + m[0].length);
      j = j < 0 ? n : j + end.length;
      blank(i + m[0].length, j - end.length);
      i = j;
    } else if (c === '"') {
      let j = i + 1;
      while (j < n && src[j] !== '"') j += src[j] === '\\' ? 2 : 1;
      blank(i + 1, j);
      i = j + 1;
    } else if (c === "'") {
      // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
      const m = /^'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'/u.exec(src.slice(i, i + 16));
      if (m) {
        blank(i + 1, i + m[0].length - 1);
        i += m[0].length;
      } else i++;
    } else i++;
  }
  return out.join('');
}

/** The index just past the item that starts at or after `from` (its `;` or closing brace). */
function itemEnd(code, from) {
  let i = from;
  let depth = 0;
  for (; i < code.length; i++) {
    const c = code[i];
    if (c === '{') depth++;
    else if (c === '}') {
      depth--;
      if (depth === 0) return i + 1;
    } else if (c === ';' && depth === 0) return i + 1;
  }
  return code.length;
}

const TEST_ATTR = /#\[\s*(?:cfg\s*\(\s*(?:all\s*\(\s*)?test\b[^\]]*\)|test)\s*\]/g;
const CALL = /(?:\.\s*|::\s*)(unwrap|expect)\b(?!_)/g;

/**
 * Scans one file's text. Returns { violations: [{ line, text }], testMods: [names of
 * `#[cfg(test)] mod name;` files] }.
 */
function scan(src) {
  const code = stripCode(src);
  const skip = [];
  const testMods = [];
  for (const m of code.matchAll(TEST_ATTR)) {
    const end = itemEnd(code, m.index + m[0].length);
    skip.push([m.index, end]);
    const decl = /^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;/.exec(code.slice(m.index + m[0].length, end));
    if (decl) testMods.push(decl[1]);
  }
  const violations = [];
  const lines = src.split('\n');
  for (const m of code.matchAll(CALL)) {
    if (skip.some(([a, b]) => m.index >= a && m.index < b)) continue;
    const line = code.slice(0, m.index).split('\n').length;
    if (/\/\/.*\bunwrap-ok:\s*\S/.test(lines[line - 1])) continue;
    violations.push({ line, text: lines[line - 1].trim() });
  }
  return { violations, testMods };
}

function rustFiles(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...rustFiles(p));
    else if (e.name.endsWith('.rs')) out.push(p);
  }
  return out.sort();
}

function check(dir) {
  const files = rustFiles(dir);
  const testOnly = new Set();
  const results = [];
  for (const file of files) {
    const { violations, testMods } = scan(fs.readFileSync(file, 'utf8'));
    const base = path.basename(file);
    const modDir = base === 'mod.rs' || base === 'lib.rs' || base === 'main.rs' ? path.dirname(file) : file.slice(0, -3);
    for (const name of testMods) {
      testOnly.add(path.join(modDir, `${name}.rs`));
      testOnly.add(path.join(modDir, name, 'mod.rs'));
    }
    results.push({ file, violations });
  }
  return results.filter((r) => !testOnly.has(r.file) && r.violations.length > 0);
}

module.exports = { scan, stripCode, check };

if (require.main === module) {
  const dir = path.resolve(process.argv[2] || path.join(__dirname, '..', 'src'));
  const bad = check(dir);
  if (bad.length === 0) {
    console.log(`check-no-unwrap: no unwrap()/expect() outside tests in ${path.relative(process.cwd(), dir) || '.'}`);
    process.exit(0);
  }
  console.error('check-no-unwrap: unwrap()/expect() outside test code (handle the error, or add');
  console.error('"// unwrap-ok: <why it cannot fail and is not peer data>" on the same line):');
  for (const { file, violations } of bad) {
    for (const v of violations) console.error(`  ${path.relative(process.cwd(), file)}:${v.line}: ${v.text}`);
  }
  process.exit(1);
}
