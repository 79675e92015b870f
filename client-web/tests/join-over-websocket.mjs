// Joins a Meshwork session from Node through the wasm protocol package over the WebSocket
// fallback, spawns one entity, and prints the replica's author, entity count and state hash
// once the server's echo has been applied. Used by server/tests/wasm_node.rs.
//   node --experimental-websocket join-over-websocket.mjs <ws-url> <ticket> <pkg-dir>
import { createRequire } from 'node:module';

const [url, ticket, pkg] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const wasm = require(`${pkg}/meshwork_wasm.js`);

const deadline = setTimeout(() => {
  console.error('timed out');
  process.exit(1);
}, 15000);

const conn = new wasm.Connection(crypto.getRandomValues(new Uint8Array(32)), ticket);
const ws = new WebSocket(url);
ws.binaryType = 'arraybuffer';
const flush = () => {
  const out = conn.poll_transmit();
  if (out.length > 0) ws.send(out);
};
let submitted = false;
ws.onopen = flush;
ws.onerror = (e) => {
  console.error('websocket error', e.message ?? e);
  process.exit(1);
};
ws.onmessage = (ev) => {
  for (const event of JSON.parse(conn.receive(new Uint8Array(ev.data)))) {
    if (['join_refused', 'refused', 'closed'].includes(event.type)) {
      console.error(event);
      process.exit(1);
    }
  }
  if (conn.synced() && !submitted) {
    const entity = conn.entity_id(1);
    conn.submit_json(JSON.stringify({
      Spawn: {
        entity,
        primitive: 'Cube',
        transform: { translation: [1, 2, 3], rotation: [0, 0, 0, 1], scale: [1, 1, 1] },
      },
    }));
    submitted = true;
  }
  flush();
  if (submitted && conn.entity_count() === 1) {
    const render = JSON.parse(conn.render_json());
    console.log(JSON.stringify({
      author: conn.author(),
      entities: conn.entity_count(),
      hash: conn.state_hash(),
      triangles: render[0].indices.length / 3,
    }));
    clearTimeout(deadline);
    ws.close();
  }
};
ws.onclose = () => process.exit(submitted ? 0 : 1);
