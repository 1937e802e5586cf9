// The ceiling of a WebSocket signal relay on this machine, for benchmarks/
// rendezvous_signaling.py: raw RFC 6455 on `net`, each socket paired with the one named in
// its URL (`/bare?id=A&partner=B`), every text frame forwarded to the partner as it is (no
// JSON, no routing table beyond the pairing), writes batched per read. Not a usable server:
// it shows what a relay costs at least, and that the load generator outruns the targets.
// `node bare_relay.js --host H --port P` prints "READY <port>".
"use strict";
const net = require("node:net");
const crypto = require("node:crypto");

const args = { host: "127.0.0.1", port: 0 };
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  const name = process.argv[i].replace(/^--/, "");
  args[name] = name === "host" ? process.argv[i + 1] : Number(process.argv[i + 1]);
}
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const sockets = new Map(); // id -> connection state

function serverFrame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + len);
  frame[0] = 0x80 | opcode;
  if (len < 126) frame[1] = len;
  else if (len < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(len, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(len), 2);
  }
  payload.copy(frame, head);
  return frame;
}

function onData(st, chunk) {
  let buf = st.buf ? Buffer.concat([st.buf, chunk]) : chunk;
  st.buf = null;
  if (!st.open) {
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) {
      st.buf = buf;
      return;
    }
    const head = buf.toString("latin1", 0, end);
    const url = new URL(head.split(" ")[1], "http://x");
    const key = /sec-websocket-key:\s*(\S+)/i.exec(head)[1];
    const accept = crypto.createHash("sha1").update(key + GUID).digest("base64");
    st.sock.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    st.open = true;
    st.id = url.searchParams.get("id");
    st.partner = url.searchParams.get("partner");
    sockets.set(st.id, st);
    buf = buf.subarray(end + 4);
  }
  const out = [];
  let off = 0;
  while (buf.length - off >= 2) {
    const b0 = buf[off];
    let len = buf[off + 1] & 0x7f;
    let head = 6;
    if (len === 126) {
      if (buf.length - off < 8) break;
      len = buf.readUInt16BE(off + 2);
      head = 8;
    } else if (len === 127) {
      if (buf.length - off < 14) break;
      len = Number(buf.readBigUInt64BE(off + 2));
      head = 14;
    }
    if (buf.length - off < head + len) break;
    const payload = Buffer.from(buf.subarray(off + head, off + head + len));
    const mask = buf.subarray(off + head - 4, off + head);
    if (mask.readUInt32BE(0) !== 0) for (let k = 0; k < len; k++) payload[k] ^= mask[k & 3];
    off += head + len;
    const opcode = b0 & 0x0f;
    if (opcode === 0x1 || opcode === 0x2) out.push(serverFrame(opcode, payload));
    else if (opcode === 0x9) st.sock.write(serverFrame(0xa, payload));
    else if (opcode === 0x8) {
      st.sock.end(serverFrame(0x8, payload));
      return;
    }
  }
  if (off < buf.length) st.buf = Buffer.from(buf.subarray(off));
  const partner = sockets.get(st.partner);
  if (out.length && partner) partner.sock.write(out.length === 1 ? out[0] : Buffer.concat(out));
}

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  const st = { sock, buf: null, open: false, id: null, partner: null };
  sock.on("data", (chunk) => onData(st, chunk));
  sock.on("error", () => sock.destroy());
  sock.on("close", () => {
    if (st.id && sockets.get(st.id) === st) sockets.delete(st.id);
  });
});
server.listen(args.port, args.host, () => process.stdout.write(`READY ${server.address().port}\n`));
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
