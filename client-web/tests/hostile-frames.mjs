// Feeds the frames a hostile server sent (written by server/tests/hostile_server.rs) to the wasm
// package's Connection, as the browser editor would receive them, and prints one JSON line: the
// reasons of the resyncs it asked for, its state hash, and the display names it shows.
//   node hostile-frames.mjs <frames-file> <ticket> <seed-hex> <pkg-dir>
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const [file, ticket, seedHex, pkg] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const wasm = require(`${pkg}/meshwork_wasm.js`);

const seed = new Uint8Array(seedHex.match(/../g).map((b) => parseInt(b, 16)));
const conn = new wasm.Connection(seed, ticket);
conn.poll_transmit(); // the Hello
const reasons = [];
for (const event of JSON.parse(conn.receive(new Uint8Array(readFileSync(file))))) {
  if (event.type === 'resyncing') reasons.push(event.reason);
  if (event.type === 'closed') {
    console.error(event);
    process.exit(1);
  }
}
const meta = JSON.parse(conn.scene_meta_json());
console.log(JSON.stringify({ reasons, hash: conn.state_hash(), names: meta.names, synced: conn.synced() }));
