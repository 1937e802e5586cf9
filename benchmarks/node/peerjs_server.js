// The PeerJS server (npm `peer`) as its `peerjs` command runs it, minus the per-client
// console.log lines: `node peerjs_server.js --host H --port P [--concurrent_limit N]`.
// Prints "READY <port>" once listening; SIGUSR2 runs a full GC (needs --expose-gc) so the
// benchmark can read a settled RSS; SIGTERM/SIGINT exit.
"use strict";
const { PeerServer } = require("peer");

const args = { host: "127.0.0.1", port: 9000, concurrent_limit: 5000, alive_timeout: 60000 };
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  const name = process.argv[i].replace(/^--/, "");
  if (!(name in args)) throw new Error(`unknown option ${process.argv[i]}`);
  args[name] = name === "host" ? process.argv[i + 1] : Number(process.argv[i + 1]);
}
PeerServer(args, (server) => {
  process.stdout.write(`READY ${server.address().port}\n`);
});
process.on("SIGUSR2", () => {
  if (global.gc) global.gc();
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
