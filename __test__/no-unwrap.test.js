'use strict';

// The no-unwrap check (scripts/check-no-unwrap.js) itself: what it flags and what it skips.

const test = require('node:test');
const assert = require('node:assert');
const { scan } = require('../scripts/check-no-unwrap.js');

const lines = (src) => scan(src).violations.map((v) => v.line);

test('flags unwrap and expect in engine code', () => {
  const src = [
    'fn a(x: Option<u8>) -> u8 {',
    '    x.unwrap()',
    '}',
    'fn b(x: Result<u8, ()>) -> u8 { x.expect("peer") }',
    'fn c(v: Vec<Option<u8>>) { v.into_iter().map(Option::unwrap); }',
    'fn d(x: Option<u8>) { x\n        .unwrap(); }'
  ].join('\n');
  assert.deepStrictEqual(lines(src), [2, 4, 5, 7]);
});

test('skips test code, comments, strings, and allow-listed lines', () => {
  const src = [
    '/// x.unwrap() in a doc comment',
    'fn a(x: Option<u8>) -> u8 { x.unwrap_or(0) } // not .unwrap()',
    'const S: &str = ".unwrap() in a string";',
    'const R: &str = r#"x.expect("y")"#;',
    "const C: char = '{';",
    "fn life<'a>(x: &'a str) -> &'a str { x }",
    'fn ok() { let n: u8 = "1".parse().unwrap(); } // unwrap-ok: constant input',
    '/* block .unwrap() */',
    '#[cfg(test)]',
    'mod tests {',
    '    fn t() { let s = "}"; Some(1).unwrap(); }',
    '    #[test] fn u() { None::<u8>.expect("x"); }',
    '}',
    '#[test]',
    'fn top() { Some(1).unwrap(); }',
    'fn after(x: Option<u8>) { x.unwrap(); }'
  ].join('\n');
  assert.deepStrictEqual(lines(src), [16]);
});

test('an allow comment needs a reason', () => {
  assert.deepStrictEqual(lines('fn a(x: Option<u8>) { x.unwrap(); } // unwrap-ok:'), [1]);
});

test('`#[cfg(test)] mod name;` marks the file as test-only', () => {
  assert.deepStrictEqual(scan('pub mod a;\n#[cfg(test)] mod corpus_tests;\n').testMods, ['corpus_tests']);
});
