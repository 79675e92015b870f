// Frame time of the browser editor with a large scene: 1000 entities, >100k triangles (440 UV
// spheres of 224 triangles + 560 cubes), rendered every frame for a few seconds. Starts its own
// server (a fresh data dir, generous rate limits so the bulk spawn is not throttled).
//   node editor-bench.mjs <meshwork-server binary> [seconds]
// Run it inside `unshare -n` for a hermetic loopback (see docs/benchmarks.md). Prints JSON.
import { launchChromium, startServer } from './bench-server.mjs';

const [bin, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg ?? '5');
const { server, http, ticket } = await startServer(bin, 'meshwork-bench-');
const browser = await launchChromium();
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await page.goto(`http://${http}/${process.env.BENCH_QUERY ?? ""}#/join/${encodeURIComponent(ticket)}`);
  await page.waitForSelector('[data-testid=connection][data-state=live]', { timeout: 30000 });
  const t0 = performance.now();
  const [n, spheres] = [Number(process.env.BENCH_N ?? 1000), Number(process.env.BENCH_SPHERES ?? 440)];
  await page.evaluate(([n, s]) => window.meshwork.spawnGrid(n, s), [n, spheres]);
  await page.waitForFunction((n) => window.meshwork.state().entities === n, n, { timeout: 120000 });
  const spawnMs = performance.now() - t0;
  // Interactive: click an entity in the outliner; time until the inspector shows it.
  const c0 = performance.now();
  await page.locator('.outliner button[data-entity]').nth(500).click();
  await page.waitForFunction(() => document.querySelector('input[name="position.x"]')?.value !== '');
  const selectMs = performance.now() - c0;
  await page.evaluate(() => window.meshwork.continuous(true));
  await page.waitForTimeout(seconds * 1000);
  const frames = await page.evaluate(() => window.meshwork.frameTimes());
  const s = await page.evaluate(() => ({ ...window.meshwork.state(), triangles: window.meshwork.triangles() }));
  const gpu = await page.evaluate(async () => {
    const a = await navigator.gpu?.requestAdapter();
    return a ? { vendor: a.info?.vendor, architecture: a.info?.architecture, fallback: a.info?.isFallbackAdapter ?? a.isFallbackAdapter } : null;
  });
  const sorted = [...frames].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  console.log(JSON.stringify({
    entities: s.entities, triangles: s.triangles, backend: s.backend, adapter: gpu,
    spawn1000Ms: Math.round(spawnMs), selectToInspectorMs: Math.round(selectMs),
    frames: frames.length,
    frameMs: { mean: frames.reduce((a, b) => a + b, 0) / frames.length, p50: q(0.5), p95: q(0.95), p99: q(0.99) },
  }));
} finally {
  await browser.close();
  server.kill('SIGTERM');
}
