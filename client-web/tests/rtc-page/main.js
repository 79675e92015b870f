// Joins a Meshwork session from the browser: the wasm protocol package (framing, keys,
// signing, replica) over WebRTC data channels, signaled through the server's HTTP API.
// `run(ticket, session)` resolves once a signed command the page submitted has come back
// from the server and been applied to the page's replica.
import init, { Connection } from '../../pkg/meshwork_wasm.js';

const status = (text) => {
  document.getElementById('status').textContent = text;
};

const within = (ms, what, promise) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)),
  ]);

export async function run(ticket, session) {
  await init();
  // TURN credentials come only with a valid ticket; STUN is public.
  const info = await (await fetch(`/api/v1/server?ticket=${encodeURIComponent(ticket)}`)).json();
  const pc = new RTCPeerConnection({ iceServers: info.webrtc.ice_servers });
  const log = pc.createDataChannel('log'); // reliable, ordered
  const presence = pc.createDataChannel('presence', { ordered: false, maxRetransmits: 0 });
  log.binaryType = 'arraybuffer';
  presence.binaryType = 'arraybuffer';

  status('gathering');
  await pc.setLocalDescription(await pc.createOffer());
  await within(10000, 'ICE gathering did not complete', new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  }));
  status('signaling');
  const res = await fetch(`/api/v1/sessions/${session}/rtc`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp }),
  });
  if (!res.ok) throw new Error(`signaling refused: ${res.status} ${await res.text()}`);
  await pc.setRemoteDescription(await res.json());

  const conn = new Connection(crypto.getRandomValues(new Uint8Array(32)), ticket);
  const flush = () => {
    const out = conn.poll_transmit();
    if (out.length > 0) log.send(out);
  };
  await within(10000, 'the log channel did not open', new Promise((resolve) => {
    log.onopen = resolve;
  }));
  status('joining');

  let submitted = false;
  const done = new Promise((resolve, reject) => {
    log.onclose = () => reject(new Error('the server closed the log channel'));
    log.onmessage = (ev) => {
      for (const event of JSON.parse(conn.receive(new Uint8Array(ev.data)))) {
        if (['join_refused', 'refused', 'closed'].includes(event.type)) reject(new Error(JSON.stringify(event)));
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
        conn.submit_json(JSON.stringify({ Translate: { entity, delta: [0.5, 0, 0] } }));
        submitted = true;
        status('submitted');
      }
      flush();
      if (submitted && conn.entity_count() === 1) {
        const render = JSON.parse(conn.render_json());
        // Column-major world_from_local: translation is elements 12..14.
        const m = render[0].world_from_local;
        if (Math.abs(m[12] - 1.5) < 1e-5) resolve({ render, m });
      }
    };
  });
  flush();
  const { render, m } = await within(15000, 'the command was not applied', done);
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
  });
  status('applied');
  const result = {
    transport: 'webrtc',
    author: conn.author(),
    entities: conn.entity_count(),
    hash: conn.state_hash(),
    triangles: render[0].indices.length / 3,
    translation: [m[12], m[13], m[14]],
    bytesReceived: pair ? pair.bytesReceived : 0,
  };
  pc.close();
  return result;
}
