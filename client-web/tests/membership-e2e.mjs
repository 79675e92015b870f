// Membership control in the editor, in Debian's Chromium (Playwright), against the real server.
// Run by server/tests/browser_membership.rs inside a loopback-only network namespace:
//   node membership-e2e.mjs <http host:port> <admin ticket> <editor ticket> <artifacts dir>
// Prints a JSON report on stdout; exits non-zero with the reason on the first failed check.
//
// Scenario: an admin (M) and two editors (B, C) join. B adds a cube. M, in the people list,
// makes B a viewer: B is told, B's toolbar turns read-only with the reason, and an edit B
// sends anyway is refused by the server with the reason. M removes C: C's editor says it was
// removed, and by whom.
import { join } from 'node:path';
import { harness } from './harness.mjs';

const [addr, adminTicket, editorTicket, artifacts] = process.argv.slice(2);
const { report, check, open, state, run } = await harness(addr, artifacts);

await run(async () => {
  const M = await open('M', adminTicket);
  const B = await open('B', editorTicket);
  const C = await open('C', editorTicket);
  check('M is an admin, B and C editors', (await state(M.page)).role === 'admin'
    && (await state(B.page)).role === 'editor' && (await state(C.page)).role === 'editor');
  await B.page.getByRole('button', { name: 'Add cube' }).click();
  await M.page.waitForFunction(() => window.meshwork.state().entities === 1, null, { timeout: 5000 });
  const cube = await M.page.locator('.outliner button[data-entity]').first().getAttribute('data-entity');

  // M makes B a viewer from the people list.
  const bAuthor = (await state(B.page)).author;
  const menu = M.page.getByTestId(`role-${bAuthor}`);
  await menu.waitFor({ timeout: 10000 });
  check('M sees B as an editor', (await menu.inputValue()) === 'editor');
  const changed = performance.now();
  await menu.selectOption('viewer');
  const viewer = await B.page
    .waitForFunction(() => window.meshwork.state().role === 'viewer', null, { timeout: 5000 })
    .then(() => true, () => false);
  report.demotedToReadOnlyMs = performance.now() - changed;
  check("B's editor knows it is a viewer now", viewer, JSON.stringify(await state(B.page)));
  check("B's toolbar turns read-only", await B.page.getByRole('button', { name: 'Add cube' }).isDisabled());
  const told = await B.page.locator('.toast').filter({ hasText: 'made you a viewer' }).first()
    .textContent({ timeout: 5000 }).catch(() => null);
  check('B is told an admin made it a viewer', told !== null, String(told));
  const banner = await B.page.getByRole('note').textContent();
  check('B sees why it cannot edit', /an admin made you a viewer/.test(banner ?? ''), banner ?? '');
  // An edit B sends anyway (a stale client, a script): the server refuses it with the reason.
  await B.page.evaluate((id) => window.meshwork.submit([{ Despawn: { entity: Number(id) } }]), cube);
  const refused = await B.page.locator('.toast').filter({ hasText: 'viewer' }).filter({ hasNotText: 'made you' })
    .first().textContent({ timeout: 5000 }).catch(() => null);
  check("the server refuses B's edit with the reason", refused !== null, String(refused));
  check('the cube is still there', (await state(M.page)).entities === 1 && (await state(B.page)).entities === 1);
  await B.page.screenshot({ path: join(artifacts, 'membership-b-viewer.png') });

  // M removes C.
  const cAuthor = (await state(C.page)).author;
  await M.page.getByTestId(`kick-${cAuthor}`).click();
  const removed = await C.page
    .waitForSelector('[data-testid=connection][data-state=closed]', { timeout: 5000 })
    .then(() => true, () => false);
  check("C's editor says it is disconnected", removed, String(await C.page.getByTestId('connection').textContent()));
  const why = await C.page.locator('.toast').filter({ hasText: 'removed you' }).first()
    .textContent({ timeout: 5000 }).catch(() => null);
  check('C is told who removed it', why !== null && why.includes('removed you from the session'), String(why));
  const gone = await M.page
    .waitForFunction((a) => !document.querySelector(`.people li[data-author="${a}"]`), cAuthor, { timeout: 5000 })
    .then(() => true, () => false);
  check("C leaves M's people list", gone);
  report.hashes = { M: (await state(M.page)).hash, B: (await state(B.page)).hash };
});
