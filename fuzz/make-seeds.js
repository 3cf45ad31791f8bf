'use strict';
// Writes the hand-made seed inputs into fuzz/corpus/<target>/seed-*. Run once before the
// first fuzzing run (node fuzz/make-seeds.js); the fuzzed corpus is committed next to them.
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, 'corpus');
const write = (target, name, bytes) => {
  fs.mkdirSync(path.join(root, target), { recursive: true });
  fs.writeFileSync(path.join(root, target, `seed-${name}`), Buffer.from(bytes));
};

function frame(op, payload, { fin = true, rsv1 = false, mask = null } = {}) {
  payload = Buffer.from(payload);
  const len = payload.length;
  const head = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | op];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len <= 0xffff) head.push(m | 126, len >> 8, len & 0xff);
  else {
    head.push(m | 127, 0, 0, 0, 0);
    head.push((len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  }
  let body = payload;
  if (mask) {
    head.push(...mask);
    body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]));
  }
  return Buffer.concat([Buffer.from(head), body]);
}

const MASK = [0x37, 0xfa, 0x21, 0x3d];
const both = (name, build) => {
  // flags bit 0: 0 = server (masked frames), 1 = client; bits 3-4 pick maxPayload, 5-7 maxFragments.
  write('receiver', `server-${name}`, Buffer.concat([Buffer.from([0x00, 0x05]), build({ mask: MASK })]));
  write('receiver', `client-${name}`, Buffer.concat([Buffer.from([0x01, 0x02]), build({})]));
};
const cat = (...b) => Buffer.concat(b);
both('text', (o) => frame(1, 'Hello', o));
both('binary', (o) => frame(2, [0, 1, 2, 255], o));
both('empty-text', (o) => frame(1, '', o));
both('utf8', (o) => frame(1, 'héllo €𝄞', o));
both('len126', (o) => frame(2, Buffer.alloc(200, 7), o));
both('len127', (o) => frame(2, Buffer.alloc(70000, 1), o));
both('fragmented', (o) =>
  cat(frame(1, 'hé'.slice(0, 1), { ...o, fin: false }), frame(9, 'p', o), frame(0, 'é', { ...o, fin: false }), frame(0, 'llo', o))
);
both('fragmented-binary', (o) => cat(frame(2, [1, 2], { ...o, fin: false }), frame(0, [], { ...o, fin: false }), frame(0, [3], o)));
both('ping-pong', (o) => cat(frame(9, 'ping', o), frame(10, 'pong', o), frame(9, '', o)));
both('close', (o) => cat(frame(8, [0x03, 0xe8, 0x62, 0x79, 0x65], o), frame(1, 'after', o)));
both('close-empty', (o) => frame(8, [], o));
both('close-4000', (o) => frame(8, [0x0f, 0xa0], o));
both('rsv1', (o) => frame(1, 'x', { ...o, rsv1: true }));
both('bad-utf8', (o) => frame(1, [0xce, 0xba, 0xf4, 0x90, 0x80, 0x80], o));
both('split-utf8', (o) => cat(frame(1, [0xe2, 0x82], { ...o, fin: false }), frame(0, [0xac], o)));
both('many', (o) => cat(...Array.from({ length: 10 }, (_, i) => frame(i % 2 ? 2 : 1, 'm' + i, o))));
both('bad-opcode', (o) => frame(3, 'x', o));
both('bad-close', (o) => frame(8, [0x03, 0xed], o));
both('continuation-first', (o) => frame(0, 'x', o));
// Small maxPayload / maxFragments.
write('receiver', 'server-maxpayload16', cat(Buffer.from([0x08, 0x03]), frame(2, Buffer.alloc(17), { mask: MASK })));
write('receiver', 'server-maxfragments2', cat(Buffer.from([0x40, 0x04]), frame(2, 'a', { fin: false, mask: MASK }), frame(0, 'b', { fin: false, mask: MASK }), frame(0, 'c', { mask: MASK })));
write('receiver', 'server-skiputf8', cat(Buffer.from([0x02, 0x06]), frame(1, [0xff], { mask: MASK })));
write('receiver', 'server-deflate', cat(Buffer.from([0x04, 0x07]), frame(1, [0xf2, 0x48, 0x05, 0x00], { rsv1: true, mask: MASK })));

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const req = (extra = '', first = 'GET /chat?x=1 HTTP/1.1') =>
  `${first}\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\n${extra}\r\n`;
write('handshake_request', 'valid', req('Sec-WebSocket-Version: 13\r\n'));
write('handshake_request', 'protocols', req('Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n'));
write('handshake_request', 'deflate', req('Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n'));
write('handshake_request', 'version8', req('Sec-WebSocket-Version: 8\r\n'));
write('handshake_request', 'bad-version', req('Sec-WebSocket-Version: 12\r\n'));
write('handshake_request', 'post', req('Sec-WebSocket-Version: 13\r\n', 'POST / HTTP/1.1'));
write('handshake_request', 'http10', req('Sec-WebSocket-Version: 13\r\n', 'GET / HTTP/1.0'));
write('handshake_request', 'frames-after', Buffer.concat([Buffer.from(req('Sec-WebSocket-Version: 13\r\n')), frame(1, 'early', { mask: MASK })]));
write('handshake_request', 'plain-get', 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
write('handshake_request', 'partial', req('Sec-WebSocket-Version: 13\r\n').slice(0, 60));
write('handshake_request', 'dup-headers', req('Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\nX: \xe9\r\n'));

const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';
const res = (extra = '', first = 'HTTP/1.1 101 Switching Protocols') =>
  `${first}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n${extra}\r\n`;
// First byte: bits 0-1 pick the offered subprotocols, bit 2 = extensions offered.
const resp = (name, flags, text) => write('handshake_response', name, Buffer.concat([Buffer.from([flags]), Buffer.from(text, 'latin1')]));
resp('valid', 0, res());
resp('protocol', 2, res('Sec-WebSocket-Protocol: superchat\r\n'));
resp('protocol-unoffered', 0, res('Sec-WebSocket-Protocol: chat\r\n'));
resp('extensions', 4, res('Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n'));
resp('bad-accept', 0, res('', 'HTTP/1.1 101 Switching Protocols').replace(ACCEPT, 'AAAAAAAAAAAAAAAAAAAAAAAAAAA='));
resp('redirect', 0, 'HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1/x\r\nContent-Length: 0\r\n\r\n');
resp('unexpected', 1, 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!');
resp('frames-after', 0, Buffer.concat([Buffer.from(res()), frame(1, 'hi')]).toString('latin1'));

for (const [name, s] of Object.entries({
  one: 'chat',
  two: 'chat, superchat',
  tabs: 'a\t,b ,\tc',
  dup: 'a,a',
  empty: '',
  'lead-space': ' a',
  'trailing-comma': 'a,',
  inner: 'a b',
  tokens: "!#$%&'*+-.^_`|~09AZaz",
  latin1: 'caf\xe9',
  long: 'x'.repeat(300) + ', ' + 'y'.repeat(300)
})) write('subprotocols', name, Buffer.from(s, 'latin1'));

// utf8: [split count (low 3 bits), split positions..., text].
const u = (name, splits, bytes) => write('utf8', name, Buffer.concat([Buffer.from([splits.length, ...splits]), Buffer.from(bytes)]));
u('ascii', [], Buffer.from('hello'));
u('mixed', [40, 128, 200], Buffer.from('héllo €𝄞 ok'));
u('surrogate', [100], [0xce, 0xba, 0xed, 0xa0, 0x80, 0x65]);
u('too-big', [64, 128], [0xf4, 0x90, 0x80, 0x80]);
u('overlong', [128], [0xc0, 0x80]);
u('truncated', [128], [0xe2, 0x82]);
u('bad-continuation', [85, 170], [0xe2, 0x82, 0x41]);
u('four', [60, 120, 180, 240], [0xf0, 0x9d, 0x84, 0x9e, 0xf0, 0x9f, 0x98, 0x80]);
