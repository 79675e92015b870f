// The editor through a cut network path and a killed server, in Debian's Chromium (Playwright),
// against the real server binary. Run by server/tests/browser_reconnect.rs inside a
// loopback-only network namespace; the Rust side kills and restarts the server when asked:
//   node reconnect-e2e.mjs <http host:port> <editor ticket> <artifacts dir>
// stdout: a line `KILL` when the server is to be killed with SIGKILL and restarted on the same
// addresses and store; the Rust side answers `RESTARTED` on stdin. Last, a JSON report.
//
// Scenario: A (WebRTC), W (WebSocket: WebRTC signaling refused) and B (WebRTC) edit one scene.
// 1. W's path is cut while B deletes W's pyramid; W, offline, deletes it too (a conflict) and
//    adds a sphere; W reconnects by itself over the WebSocket: the sphere lands, the delete is
//    refused with its reason.
// 2. The server is SIGKILLed and restarted. A and W are kept offline; B reconnects by itself and
//    deletes A's cube and W's pyramid; A and W, offline, delete them too and add a sphere each;
//    when the network is back both reconnect by themselves: the adds land once, the deletes are
//    refused with their reasons, nothing stays pending, and every replica has one hash.
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { harness } from './harness.mjs';

const [addr, ticket, artifacts] = process.argv.slice(2);
const { report, check, open, state, run } = await harness(addr, artifacts);
const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Whether a page's network is blocked (signaling, the WebSocket, the server lookup). */
const blocked = new Map();
const blockable = async (name, context, rtc = true) => {
  blocked.set(name, false);
  await context.route(/\/api\/v1\/sessions\/[^/]+\/rtc/, (r) => (blocked.get(name) || !rtc ? r.abort() : r.continue()));
  await context.route(/\/api\/v1\/server\?/, (r) => (blocked.get(name) ? r.abort() : r.continue()));
  await context.routeWebSocket(/\/api\/v1\/sessions\/.*\/ws$/, (ws) => (blocked.get(name) ? ws.close() : ws.connectToServer()));
};
const waitState = (page, test, arg, ms = 30000) =>
  page.waitForFunction(test, arg, { timeout: ms }).then(() => true, () => false);
const connection = (page, want, ms = 30000) =>
  page
    .waitForSelector(`[data-testid=connection][data-state=${want}]`, { timeout: ms })
    .then(() => true, () => false);
const entities = async (page) => (await state(page)).entities;
const entitiesAre = (page, n, ms = 15000) =>
  waitState(page, (k) => window.meshwork.state().entities === k, n, ms);
const pending = async (page) => Number(await page.getByTestId('connection').getAttribute('data-pending'));
const status = async (page) => String(await page.getByTestId('connection').textContent());
/** The id of the newest entity whose outliner row reads `label`. */
const newest = (page, label) =>
  page.evaluate((l) => {
    const ids = [...document.querySelectorAll('.outliner button[data-entity]')]
      .filter((b) => b.textContent?.includes(l))
      .map((b) => Number(b.getAttribute('data-entity')));
    return Math.max(...ids);
  }, label);
/** Selects entity `id` in the outliner and deletes it with the toolbar, as a user does. */
const deleteInEditor = async (page, id) => {
  await page.locator(`.outliner button[data-entity="${id}"]`).click();
  await page.getByRole('button', { name: 'Delete', exact: true }).click();
};
const refusal = (page) =>
  page.locator('.toast').filter({ hasText: 'Conflict' }).first().textContent({ timeout: 15000 }).catch(() => null);

await run(async () => {
  const A = await open('A', ticket, (ctx) => blockable('A', ctx));
  const W = await open('W', ticket, (ctx) => blockable('W', ctx, false));
  const B = await open('B', ticket);
  check('A is on WebRTC, W on the WebSocket, B on WebRTC',
    (await state(A.page)).transport === 'webrtc' && (await state(W.page)).transport === 'websocket'
      && (await state(B.page)).transport === 'webrtc');

  // 1. The WebSocket path is cut while another client edits.
  await W.page.getByRole('button', { name: 'Add pyramid' }).click();
  check('everyone sees W\'s pyramid', await entitiesAre(B.page, 1) && await entitiesAre(A.page, 1));
  const pyramid = await newest(B.page, 'Pyramid');
  blocked.set('W', true);
  await W.page.evaluate(() => window.meshwork.dropConnection());
  check('W notices the cut', await connection(W.page, 'reconnecting', 5000), await status(W.page));
  await B.page.evaluate((id) => window.meshwork.submit([{ Despawn: { entity: id } }]), pyramid);
  check('B deletes the pyramid while W is offline', await entitiesAre(A.page, 0));
  await deleteInEditor(W.page, pyramid);
  await W.page.getByRole('button', { name: 'Add sphere' }).click();
  check('W\'s offline edits are pending', (await pending(W.page)) >= 2, await status(W.page));
  const rows = (page) => page.evaluate(() => [...document.querySelectorAll('.outliner button[data-entity]')]
    .map((b) => b.textContent ?? ''));
  const wRows = await rows(W.page);
  check('W sees its offline edits at once: the pyramid gone, a sphere added',
    wRows.length === 1 && wRows[0].includes('Sphere'), JSON.stringify(wRows));
  blocked.set('W', false);
  check('W reconnects by itself over the WebSocket', await connection(W.page, 'live'), await status(W.page));
  check('W is back on the WebSocket', (await state(W.page)).transport === 'websocket');
  check('W\'s offline sphere lands at A and B', await entitiesAre(A.page, 1) && await entitiesAre(B.page, 1));
  const wRefused = await refusal(W.page);
  check('W sees its offline delete refused, with the reason', wRefused !== null, String(wRefused));
  check('nothing is left pending at W', await waitState(W.page, () =>
    document.querySelector('[data-testid=connection]')?.getAttribute('data-pending') === '0'), await status(W.page));

  // 2. SIGKILL and restart, A and W offline meanwhile.
  await A.page.getByRole('button', { name: 'Add cube' }).click();
  await W.page.getByRole('button', { name: 'Add pyramid' }).click();
  check('everyone sees the cube and the pyramid', await entitiesAre(B.page, 3) && await entitiesAre(A.page, 3)
    && await entitiesAre(W.page, 3));
  const [cube, pyramid2] = [await newest(B.page, 'Cube'), await newest(B.page, 'Pyramid')];
  const before = await entities(B.page);
  blocked.set('A', true);
  blocked.set('W', true);
  console.log('KILL');
  const answer = await stdin.next();
  check('the server was killed and restarted', answer.value === 'RESTARTED', String(answer.value));
  const killed = performance.now();
  const noticed = await connection(A.page, 'reconnecting', 15000) && await connection(W.page, 'reconnecting', 15000);
  report.killNoticedMs = performance.now() - killed;
  check('A and W notice the server is gone', noticed, `${await status(A.page)} / ${await status(W.page)}`);
  check('B reconnects to the restarted server by itself', await connection(B.page, 'live'), await status(B.page));
  report.bBackMs = performance.now() - killed;
  await B.page.evaluate(([c, p]) => window.meshwork.submit([{ Despawn: { entity: c } }, { Despawn: { entity: p } }]),
    [cube, pyramid2]);
  check('B deletes the cube and the pyramid', await entitiesAre(B.page, before - 2));
  await deleteInEditor(A.page, cube);
  await A.page.getByRole('button', { name: 'Add sphere' }).click();
  await deleteInEditor(W.page, pyramid2);
  await W.page.getByRole('button', { name: 'Add sphere' }).click();
  check('A\'s and W\'s offline edits are pending', (await pending(A.page)) >= 2 && (await pending(W.page)) >= 2,
    `${await status(A.page)} / ${await status(W.page)}`);
  blocked.set('A', false);
  blocked.set('W', false);
  const back = await connection(A.page, 'live') && await connection(W.page, 'live');
  check('A and W reconnect by themselves', back, `${await status(A.page)} / ${await status(W.page)}`);
  check('A is back on WebRTC, W on the WebSocket',
    (await state(A.page)).transport === 'webrtc' && (await state(W.page)).transport === 'websocket');
  // The two spheres land once each: what B deleted, less, plus two.
  check('both offline spheres land at B, once', await entitiesAre(B.page, before),
    JSON.stringify(await state(B.page)));
  const aRefused = await refusal(A.page);
  check('A sees its offline delete refused, with the reason', aRefused !== null, String(aRefused));
  check('W\'s second offline delete is refused as a conflict too', await waitState(W.page,
    () => window.meshwork.state().conflicts === 2), JSON.stringify(await state(W.page)));
  check('A had one conflict, its delete', (await state(A.page)).conflicts === 1, JSON.stringify(await state(A.page)));
  for (const [name, p] of [['A', A.page], ['W', W.page], ['B', B.page]]) {
    check(`nothing is left pending at ${name}`, await waitState(p, () =>
      document.querySelector('[data-testid=connection]')?.getAttribute('data-pending') === '0'), await status(p));
  }
  const hashes = await Promise.all([A, W, B].map(async (c) => (await state(c.page)).hash));
  check('every replica has one hash', new Set(hashes).size === 1, JSON.stringify(hashes));
  report.hashes = { A: hashes[0], W: hashes[1], B: hashes[2] };
  report.entities = await entities(B.page);
  await A.page.screenshot({ path: join(artifacts, 'reconnect-a.png') });
});
