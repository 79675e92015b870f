// Replays a Meshwork log through a fresh replica of the wasm protocol package and prints its
// state hash as one JSON line. The log file holds server frames back to back (a snapshot, then
// entries), as written by server/session/tests/mesh_props.rs.
//   node replay-log.mjs <frames-file> <pkg-dir>
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const [file, pkg] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const wasm = require(`${pkg}/meshwork_wasm.js`);

const frames = new Uint8Array(readFileSync(file));
console.log(JSON.stringify({ bytes: frames.length, hash: wasm.replay_log(frames) }));
