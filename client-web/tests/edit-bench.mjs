// The browser editor with one ~100k-triangle mesh: a 100-vertex move applied and redrawn, 20
// times — the script time from the replica's change to the updated view (`refreshTimes`) and
// the time until the next frame shows it — then the frame time with that mesh on screen.
// Starts its own server (a fresh data dir, generous rate limits).
//   node edit-bench.mjs <meshwork-server binary>
// Run it inside `unshare -n` for a hermetic loopback (see docs/benchmarks.md). Prints JSON.
import { launchChromium, startServer } from './bench-server.mjs';

const [bin] = process.argv.slice(2);
const { server, http, ticket } = await startServer(bin, 'meshwork-edit-bench-');
const browser = await launchChromium();
const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await page.goto(`http://${http}/#/join/${encodeURIComponent(ticket)}`);
  await page.waitForSelector('[data-testid=connection][data-state=live]', { timeout: 30000 });
  const author = await page.evaluate(() => window.meshwork.state().author);
  const entity = author * 2 ** 32 + 1;
  // A cube; every face cut with 8 cuts per edge (9 × 9), then 4 (5 × 5) again, then one Catmull–Clark level: 48,600 quads.
  const faces = () => page.evaluate((e) => window.meshwork.editMesh(e).faces.map((f) => f.id), entity);
  const position = () => page.evaluate(() => window.meshwork.state().position);
  const step = async (commands) => {
    const before = await position();
    await page.evaluate((c) => window.meshwork.submit(c), commands);
    await page.waitForFunction((p) => window.meshwork.state().position > p, before, { timeout: 120000 }).catch(async (e) => {
      const toasts = await page.locator('.toast').allTextContents();
      throw new Error(`${Object.keys(commands[0])[0]} did not land: ${JSON.stringify(toasts)} (${e.message})`);
    });
  };
  await step([{ Spawn: { entity, primitive: 'Cube', transform: { translation: [0, 1, 0], rotation: [0, 0, 0, 1], scale: [2, 2, 2] } } }]);
  await step([{ SubdivideFaces: { entity, faces: await faces(), cuts: 8 } }]);
  await step([{ SubdivideFaces: { entity, faces: await faces(), cuts: 4 } }]);
  await step([{ Smooth: { entity, faces: [], levels: 1 } }]);
  const triangles = await page.evaluate(() => window.meshwork.triangles());
  const vertices = await page.evaluate((e) => window.meshwork.editMesh(e).vertices, entity);
  const moves = [];
  const shown = [];
  for (let i = 0; i < 20; i += 1) {
    const batch = vertices.slice(i * 100, i * 100 + 100).map((v) => [v.id, [v.p[0] * 1.05, v.p[1] * 1.05, v.p[2] * 1.05]]);
    const before = await page.evaluate(() => window.meshwork.framesRendered());
    const t0 = Date.now();
    await step([{ MoveVertices: { entity, moves: batch } }]);
    await page.waitForFunction((n) => window.meshwork.framesRendered() > n, before, { timeout: 60000 });
    shown.push(Date.now() - t0);
    moves.push(await page.evaluate(() => window.meshwork.refreshTimes().at(-1)));
  }
  await page.evaluate(() => window.meshwork.continuous(true));
  await page.waitForTimeout(4000);
  const frames = await page.evaluate(() => window.meshwork.frameTimes());
  const s = await page.evaluate(() => window.meshwork.state());
  console.log(JSON.stringify({
    triangles, backend: s.backend, moves: moves.length,
    refreshMs: { p50: q(moves, 0.5), p95: q(moves, 0.95), max: Math.max(...moves) },
    submitToFrameMs: { p50: q(shown, 0.5), p95: q(shown, 0.95) },
    frameMs: { p50: q(frames, 0.5), p95: q(frames, 0.95), n: frames.length },
  }));
} finally {
  await browser.close();
  server.kill('SIGTERM');
}
