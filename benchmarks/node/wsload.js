// WebSocket load generator of benchmarks/rendezvous_signaling.py: a minimal RFC 6455 client
// on raw `net` sockets (pre-built frames, replies batched per read) so that it costs far
// less per signal than the servers under test.
//
//   node wsload.js throughput --target natkit|peerjs|bare --port P [--pairs 32]
//        [--inflight 16] [--seconds 5] [--warmup 1]
//     Opens 2 x pairs sockets (authenticated as each server requires), verifies one relayed
//     signal on every socket, then runs a closed loop: the first socket of each pair sends
//     `inflight` signals to the second, and every signal received is answered by one signal
//     back to the partner. Prints one JSON line: signals delivered per second, and more.
//
//   node wsload.js idle --target natkit|peerjs --port P [--count 10000]
//     Opens `count` authenticated sockets, prints "READY <count>", keeps them open and
//     alive (answering pings as real clients do) until SIGTERM, then prints
//     one JSON line (how many are still open) and exits.
//
// Targets: natkit `/v1/ws` (Ed25519 challenge; {"type":"signal","to",data}); PeerJS
// `/peerjs?key=peerjs&id=&token=` ({"type":"CANDIDATE","dst",payload}); `bare`
// (bare_relay.js: forwards each frame to the partner, no parsing: the ceiling).
"use strict";
const net = require("node:net");
const crypto = require("node:crypto");

const HOST = "127.0.0.1";
// Source addresses to spread many sockets over (all loopback): 4 x the ephemeral ports.
const SOURCES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];
const SIGNING_CONTEXT = "natkit-rendezvous-v1";
const WEBSOCKET_HELLO = "websocket-hello";
// A typical trickled ICE candidate: the signal both servers relay.
const DATA = {
  candidate:
    "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag EsAw network-cost 999",
  sdpMid: "0",
  sdpMLineIndex: 0,
};

function parseArgs(argv) {
  const opts = { mode: argv[0], target: "natkit", port: 0, pairs: 32, inflight: 16 };
  Object.assign(opts, { seconds: 5, warmup: 1, count: 10000, concurrency: 64, timeout: 120 });
  for (let i = 1; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!(name in opts)) throw new Error(`unknown option ${argv[i]}`);
    opts[name] = name === "target" ? argv[i + 1] : Number(argv[i + 1]);
  }
  return opts;
}

// --- frames -------------------------------------------------------------------------

/** A client frame (masked with a zero key: the payload bytes stay as they are). */
function clientFrame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? 6 : len < 65536 ? 8 : 14;
  const frame = Buffer.alloc(head + len);
  frame[0] = 0x80 | opcode;
  if (len < 126) frame[1] = 0x80 | len;
  else if (len < 65536) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(len, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(len), 2);
  }
  payload.copy(frame, head); // the 4 mask bytes before it are zero
  return frame;
}

const textFrame = (text) => clientFrame(0x1, Buffer.from(text));

class Conn {
  constructor(port, path, source) {
    this.state = "http";
    this.buf = null;
    this.onText = null; // (conn, payload Buffer) per text frame
    this.afterRead = null; // (conn) once per read, after its frames
    this.onOpen = null;
    this.onClose = null;
    this.closed = false;
    const key = crypto.randomBytes(16).toString("base64");
    this.sock = net.connect({ host: HOST, port, localAddress: source });
    this.sock.setNoDelay(true);
    this.sock.on("connect", () => {
      this.sock.write(
        `GET ${path} HTTP/1.1\r\nHost: ${HOST}:${port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    this.sock.on("data", (chunk) => this.data(chunk));
    this.sock.on("error", (err) => this.close(err.message));
    this.sock.on("close", () => this.close("closed by the server"));
  }

  close(why) {
    if (this.closed) return;
    this.closed = true;
    this.sock.destroy();
    if (this.onClose) this.onClose(this, why);
  }

  send(text) {
    this.sock.write(textFrame(text));
  }

  data(chunk) {
    let buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    this.buf = null;
    if (this.state === "http") {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        this.buf = buf;
        return;
      }
      const head = buf.toString("latin1", 0, end);
      if (!head.startsWith("HTTP/1.1 101")) {
        this.close(`upgrade refused: ${head.split("\r\n")[0]}`);
        return;
      }
      this.state = "open";
      buf = buf.subarray(end + 4);
      if (this.onOpen) this.onOpen(this);
    }
    let off = 0;
    while (buf.length - off >= 2) {
      const b0 = buf[off];
      let len = buf[off + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        head = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        head = 10;
      }
      if (buf.length - off < head + len) break;
      const payload = buf.subarray(off + head, off + head + len);
      off += head + len;
      const opcode = b0 & 0x0f;
      if (opcode === 0x1) this.onText(this, payload);
      else if (opcode === 0x9) this.sock.write(clientFrame(0xa, payload));
      else if (opcode === 0x8) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 0;
        this.close(`close frame ${code} ${payload.subarray(2).toString()}`);
        return;
      }
    }
    if (off < buf.length) this.buf = Buffer.from(buf.subarray(off));
    if (this.afterRead) this.afterRead(this);
  }
}

// --- identities and targets ---------------------------------------------------------

function base32(bytes) {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** An Ed25519 key pair and its natkit peer_id (client_sdk/identity.py). */
function natkitIdentity() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
  const peerId = base32(crypto.createHash("sha256").update(raw).digest().subarray(0, 20));
  return { peerId, publicKey: raw.toString("base64url"), privateKey };
}

/** One client of `target`: {id, path, auth(conn, payload) -> "ok"|"wait"|error text,
 * signal(toId) -> text, prefix (Buffer every relayed signal starts with), check(msg, fromId)}. */
function client(target, index, partnerIndex) {
  if (target === "natkit") {
    const me = natkitIdentity();
    return {
      id: me.peerId,
      path: "/v1/ws",
      auth(conn, payload) {
        const msg = JSON.parse(payload.toString());
        if (msg.type === "challenge") {
          const signed = [SIGNING_CONTEXT, msg.challenge, WEBSOCKET_HELLO].join("\n");
          const signature = crypto.sign(null, Buffer.from(signed), me.privateKey);
          conn.send(
            JSON.stringify({
              type: "hello",
              public_key: me.publicKey,
              signature: signature.toString("base64url"),
            }),
          );
          return "wait";
        }
        if (msg.type === "welcome" && msg.peer_id === me.peerId) return "ok";
        return `unexpected ${payload.toString()}`;
      },
      signal: (to) => JSON.stringify({ type: "signal", to, data: DATA }),
      prefix: Buffer.from('{"type":"signal"'),
      check: (msg, from) =>
        msg.type === "signal" && msg.from === from && JSON.stringify(msg.data) === JSON.stringify(DATA),
      ping(conn, payload) {
        // natkit measures each socket's round trip: {"type": "ping", "nonce"} -> pong.
        if (payload.indexOf('"ping"') < 0) return false;
        const msg = JSON.parse(payload.toString());
        if (msg.type !== "ping") return false;
        conn.send(JSON.stringify({ type: "pong", nonce: msg.nonce }));
        return true;
      },
    };
  }
  // PeerJS and bare: ids of the same length as natkit's.
  const id = `peer${String(index).padStart(8, "0")}${"x".repeat(20)}`;
  if (target === "peerjs") {
    return {
      id,
      path: `/peerjs?key=peerjs&id=${id}&token=${crypto.randomBytes(6).toString("hex")}`,
      auth(conn, payload) {
        const msg = JSON.parse(payload.toString());
        return msg.type === "OPEN" ? "ok" : `unexpected ${payload.toString()}`;
      },
      signal: (dst) => JSON.stringify({ type: "CANDIDATE", dst, payload: DATA }),
      prefix: Buffer.from('{"type":"CANDIDATE"'),
      check: (msg, from) =>
        msg.type === "CANDIDATE" &&
        msg.src === from &&
        JSON.stringify(msg.payload) === JSON.stringify(DATA),
      ping: () => false,
    };
  }
  if (target === "bare") {
    const partner = `peer${String(partnerIndex).padStart(8, "0")}${"x".repeat(20)}`;
    return {
      id,
      path: `/bare?id=${id}&partner=${partner}`,
      auth: null, // open once upgraded
      signal: (dst) => JSON.stringify({ type: "CANDIDATE", dst, payload: DATA }),
      prefix: Buffer.from('{"type":"CANDIDATE"'),
      check: (msg) => msg.type === "CANDIDATE" && JSON.stringify(msg.payload) === JSON.stringify(DATA),
      ping: () => false,
    };
  }
  throw new Error(`unknown target ${target}`);
}

function startsWith(payload, prefix) {
  return payload.length >= prefix.length && payload.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/** Connect and authenticate `clients`; resolves with their Conns once all are ready. */
function connectAll(opts, clients, onFailure) {
  return new Promise((resolve) => {
    const conns = new Array(clients.length);
    let next = 0;
    let ready = 0;
    const launch = () => {
      if (next >= clients.length) return;
      const i = next++;
      const c = clients[i];
      const conn = new Conn(opts.port, c.path, SOURCES[i % SOURCES.length]);
      conn.client = c;
      conns[i] = conn;
      const done = () => {
        conn.onText = (cn, payload) => c.ping(cn, payload); // until the caller's own

        ready++;
        if (ready === clients.length) resolve(conns);
        else launch();
      };
      conn.onClose = (_, why) => onFailure(`socket ${i} (${c.id}): ${why}`);
      if (c.auth === null) conn.onOpen = done;
      conn.onText = (cn, payload) => {
        const got = c.auth(cn, payload);
        if (got === "ok") done();
        else if (got !== "wait") onFailure(`socket ${i}: ${got}`);
      };
    };
    for (let k = 0; k < Math.min(opts.concurrency, clients.length); k++) launch();
  });
}

function fail(why) {
  process.stdout.write(JSON.stringify({ error: why }) + "\n");
  process.exit(2);
}

// --- throughput ---------------------------------------------------------------------

async function throughput(opts) {
  const n = opts.pairs;
  const clients = [];
  for (let p = 0; p < n; p++) {
    clients.push(client(opts.target, 2 * p, 2 * p + 1), client(opts.target, 2 * p + 1, 2 * p));
  }
  const stats = { delivered: 0, other: 0, otherSample: "", closed: 0 };
  let running = true;
  const conns = await connectAll(opts, clients, (why) => running && fail(why));
  let unverified = conns.length;
  for (let i = 0; i < conns.length; i++) {
    const conn = conns[i];
    const partner = conns[i ^ 1];
    const c = conn.client;
    const frame = textFrame(c.signal(partner.client.id));
    const batch = Buffer.concat(Array(2 * opts.inflight).fill(frame));
    conn.initial = batch.subarray(0, frame.length * opts.inflight);
    conn.pending = 0;
    conn.verified = false;
    conn.onText = (cn, payload) => {
      if (startsWith(payload, c.prefix)) {
        stats.delivered++;
        cn.pending++;
        if (!cn.verified) {
          if (!c.check(JSON.parse(payload.toString()), partner.client.id)) {
            fail(`socket ${i} received a wrong signal: ${payload.toString()}`);
          }
          cn.verified = true;
          unverified--;
        }
      } else if (!c.ping(cn, payload)) {
        stats.other++;
        if (!stats.otherSample) stats.otherSample = payload.toString().slice(0, 300);
      }
    };
    conn.afterRead = (cn) => {
      let pending = cn.pending;
      cn.pending = 0;
      if (!running) return;
      while (pending > 0) {
        const k = Math.min(pending, 2 * opts.inflight);
        cn.sock.write(batch.subarray(0, frame.length * k));
        pending -= k;
      }
    };
    conn.onClose = (_, why) => {
      if (running) fail(`socket ${i} closed mid-run: ${why}`);
    };
  }
  for (let i = 0; i < conns.length; i += 2) conns[i].sock.write(conns[i].initial);
  const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
  await sleep(opts.warmup);
  if (unverified > 0) fail(`${unverified} sockets received no signal during the warm-up`);
  const d0 = stats.delivered;
  const t0 = process.hrtime.bigint();
  await sleep(opts.seconds);
  const d1 = stats.delivered;
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  running = false;
  const cpu = process.cpuUsage();
  process.stdout.write(
    JSON.stringify({
      target: opts.target,
      rate: (d1 - d0) / elapsed,
      delivered: d1 - d0,
      seconds: elapsed,
      pairs: n,
      inflight: opts.inflight,
      other: stats.other,
      other_sample: stats.otherSample,
      client_cpu_seconds: (cpu.user + cpu.system) / 1e6,
    }) + "\n",
  );
  for (const conn of conns) conn.sock.destroy();
  process.exit(0);
}

// --- idle ---------------------------------------------------------------------------

async function idle(opts) {
  const clients = [];
  for (let i = 0; i < opts.count; i++) clients.push(client(opts.target, i, i ^ 1));
  let holding = false;
  let lost = 0;
  let lostSample = "";
  const conns = await connectAll(opts, clients, (why) => {
    if (!holding) fail(why);
    lost++;
    if (!lostSample) lostSample = why;
  });
  holding = true;
  for (const conn of conns) {
    const c = conn.client;
    conn.onText = (cn, payload) => c.ping(cn, payload);
    conn.onClose = (_, why) => {
      lost++;
      if (!lostSample) lostSample = why;
    };
  }
  // PeerJS clients send a HEARTBEAT every 5 s (its server drops silent ones after 60 s).
  let heartbeats = null;
  if (opts.target === "peerjs") {
    const frame = textFrame(JSON.stringify({ type: "HEARTBEAT" }));
    let at = 0;
    const slice = Math.ceil(conns.length / 50);
    heartbeats = setInterval(() => {
      for (let k = 0; k < slice; k++, at = (at + 1) % conns.length) {
        if (!conns[at].closed) conns[at].sock.write(frame);
      }
    }, 100);
  }
  clearTimeout(deadline);
  process.stdout.write(`READY ${conns.length}\n`);
  const finish = () => {
    if (heartbeats) clearInterval(heartbeats);
    const open = conns.filter((c) => !c.closed).length;
    process.stdout.write(JSON.stringify({ open, lost, lost_sample: lostSample }) + "\n");
    for (const conn of conns) conn.sock.destroy();
    process.exit(0);
  };
  process.on("SIGTERM", finish);
  process.on("SIGINT", finish);
}

const opts = parseArgs(process.argv.slice(2));
// A bound on the setup (and on a throughput run); an idle hold ends with SIGTERM.
const deadline = setTimeout(() => fail(`not done within ${opts.timeout}s`), opts.timeout * 1000);
deadline.unref();
if (opts.mode === "throughput") throughput(opts);
else if (opts.mode === "idle") idle(opts);
else fail(`unknown mode ${opts.mode}`);
