// How fast a browser replica checks what it is sent: replays a signed log (a roster, the empty
// scene, then N entries by 8 authors in frames of 64, as the server fans them out) through the
// wasm replica, which verifies every entry's signature against the roster (batch equation)
// before applying it. Prints one JSON line: entries, best-of-runs milliseconds, entries/s.
//   node client-web/tests/verify-bench.mjs <node-pkg-dir> [entries] [runs]
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const [pkg, n = '20000', runs = '5'] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const wasm = require(`${pkg}/meshwork_wasm.js`);

const entries = Number(n);
const frames = wasm.bench_log_frames(entries, 8);
let best = Infinity;
let hash = '';
for (let i = 0; i < Number(runs); i += 1) {
  const t0 = performance.now();
  hash = wasm.replay_log(frames);
  best = Math.min(best, performance.now() - t0);
}
console.log(
  JSON.stringify({
    entries,
    bytes: frames.length,
    best_ms: Number(best.toFixed(1)),
    entries_per_s: Math.round(entries / (best / 1000)),
    hash,
  }),
);
