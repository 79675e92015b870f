// The browser editor end to end in Debian's Chromium (Playwright; WebGPU on SwiftShader; WebRTC
// on loopback), against a real server that serves the built editor. Run by
// server/tests/browser_editor.rs inside a loopback-only network namespace.
//   node editor-e2e.mjs <http host:port> <editor ticket> <viewer ticket> <artifacts dir> <admin token>
// Prints a JSON report on stdout; exits non-zero with the reason on the first failed check.
//
// Scenario: A (editor) and B (viewer) join; A adds a cube, colors it, moves it with the
// inspector and then with the gizmo; B sees each move in its outliner within 1 s and the cube on
// its canvas (pixels of a screenshot); B cannot edit and is told why; A reloads and the scene and
// its identity are still there; C joins with WebRTC blocked and works over the WebSocket; A
// undoes a rename with Ctrl+Z and C sees it within 1 s, A's undo of what C renamed since is
// refused naming C, and A's History panel lists both with the undone step struck through;
// B downloads the scene with "Export glTF" and the Khronos validator passes it; an admin creates
// a session and an invite link on the landing page, and the link opens the editor.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import validator from 'gltf-validator';
import { harness } from './harness.mjs';

const [addr, editorTicket, viewerTicket, artifacts, adminToken] = process.argv.slice(2);
const { base, browser, report, check, open, state, run } = await harness(addr, artifacts);

/** The first outliner entry's translation as B sees it, polled until `want` or 1 s passes. */
async function seenWithin(page, want, ms = 1000) {
  const start = performance.now();
  for (;;) {
    const t = await page
      .locator('.outliner button[data-translation]')
      .first()
      .getAttribute('data-translation', { timeout: 1000 })
      .catch(() => null);
    const elapsed = performance.now() - start;
    if (t === want) return elapsed;
    if (elapsed > ms) return { late: elapsed, last: t };
    await page.waitForTimeout(10);
  }
}

await run(async () => {
  const A = await open('A', editorTicket);
  const B = await open('B', viewerTicket);
  const a0 = await state(A.page);
  check('A joined as editor over WebRTC', a0.role === 'editor' && a0.transport === 'webrtc', JSON.stringify(a0));
  // The renderer starts beside the connection: wait for it, not only for the join.
  const backend = await A.page
    .waitForFunction(() => window.meshwork.state().backend !== 'starting', null, { timeout: 20000 })
    .then(() => state(A.page).then((s) => s.backend), () => 'starting');
  check('rendering backend', backend === 'WebGPU' || backend === 'WebGL2', backend);
  report.backend = backend;
  const b0 = await state(B.page);
  check('B joined as viewer', b0.role === 'viewer', JSON.stringify(b0));

  // Display names: a first visit asks for one; A answers, and B's people list shows it (a
  // signed entry of A's, checked by B's replica against the roster).
  check('a first visit asks for a name', await A.page.getByTestId('name-form').isVisible());
  await A.page.getByTestId('display-name').fill('Ada');
  await A.page.getByTestId('name-form').getByRole('button', { name: 'Save' }).click();
  const nameShown = await B.page
    .waitForFunction(() => [...document.querySelectorAll('.people li')].some((li) => li.textContent === 'Ada'), null, {
      timeout: 5000,
    })
    .then(() => true, () => false);
  check('B sees A by the name A chose', nameShown, String(await B.page.locator('.people').textContent()));
  check('A sees its own name', /Ada \(you, editor\)/.test((await A.page.locator('.people').textContent()) ?? ''));

  // A adds a cube and colors it red.
  await A.page.getByRole('button', { name: 'Add cube' }).click();
  await A.page.locator('.outliner button[data-entity]').first().waitFor();
  const color = A.page.getByLabel('Entity color');
  await color.evaluate((el) => {
    el.value = '#ff2020';
    el.dispatchEvent(new Event('change', { bubbles: true }));
  });

  // Inspector: x = 1.5. B sees it within 1 s.
  const x = A.page.getByLabel('Position X');
  await x.fill('1.5');
  await x.press('Enter');
  const inspectorMs = await seenWithin(B.page, '1.500,0.500,0.000');
  check('B sees the inspector move within 1 s', typeof inspectorMs === 'number', JSON.stringify(inspectorMs));
  report.inspectorToViewerMs = inspectorMs;

  // Gizmo: drag the X handle like a user.
  await A.page.getByRole('button', { name: 'Move', exact: true }).click();
  const axis = await A.page.evaluate(() => window.meshwork.gizmoAxis('x'));
  check('gizmo attached to the selection', axis !== null, 'no gizmo');
  const [gx, gy] = axis.grab;
  const [ax, ay] = axis.along;
  const len = Math.hypot(ax - gx, ay - gy);
  await A.page.mouse.move(gx, gy);
  await A.page.mouse.down();
  for (let i = 1; i <= 10; i += 1) {
    await A.page.mouse.move(gx + ((ax - gx) / len) * 12 * i, gy + ((ay - gy) / len) * 12 * i);
  }
  // While dragging, A shows the move at once (local preview), before any server round trip.
  const during = await A.page.locator('.outliner button[data-translation]').first().getAttribute('data-translation');
  // B sees the drag live, before A releases (A's previews on the presence lane).
  const liveAtB = await B.page
    .waitForFunction(
      () => {
        const t = document.querySelector('.outliner button[data-translation]')?.getAttribute('data-translation');
        return t && t !== '1.500,0.500,0.000' ? t : null;
      },
      null,
      { timeout: 3000 },
    )
    .then((h) => h.jsonValue(), () => null);
  check("B sees A's drag before A releases", liveAtB !== null && Number(liveAtB.split(',')[0]) > 1.5, String(liveAtB));
  report.previewAtViewer = liveAtB;
  await A.page.mouse.up();
  const afterA = await A.page.waitForFunction(
    () => {
      const t = document.querySelector('.outliner button[data-translation]')?.getAttribute('data-translation');
      return t && t !== '1.500,0.500,0.000' ? t : null;
    },
    null,
    { timeout: 5000 },
  );
  const moved = await afterA.jsonValue();
  const movedX = Number(moved.split(',')[0]);
  check('the gizmo drag moved the cube along +X', movedX > 1.6, `${during} -> ${moved}`);
  const gizmoMs = await seenWithin(B.page, moved);
  check('B sees the gizmo move within 1 s', typeof gizmoMs === 'number', JSON.stringify(gizmoMs));
  report.gizmoToViewerMs = gizmoMs;
  // Once the server has spoken, A shows what the replica holds (the preview is gone): the same
  // transform B sees.
  const settled = await A.page
    .waitForFunction(
      (want) => window.meshwork.state().previews === 0
        && document.querySelector('.outliner button[data-translation]')?.getAttribute('data-translation') === want,
      moved,
      { timeout: 5000 },
    )
    .then(() => true, () => false);
  check('A settles on the server-ordered transform', settled, moved);

  // B's canvas shows the red cube: count red pixels in screenshots of the canvas until they
  // appear (frames render on demand) or 5 s pass.
  await B.page.mouse.move(640, 400); // B's cursor is presence for A
  // B's canvas pixels, counted in a screenshot (saved as `name`): red ones (the cube), and those
  // of hue `hue` ± 20° (an author's colour; -1 for none).
  const bPixels = async (name, hue = -1) => {
    const shot = await B.page.locator('[data-testid=viewport]').screenshot({ path: join(artifacts, `${name}.png`) });
    return B.page.evaluate(async ([b64, hueA]) => {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = new OffscreenCanvas(img.width, img.height);
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, img.width, img.height).data;
      let red = 0;
      let authorA = 0;
      for (let i = 0; i < d.length; i += 4) {
        const [r, gr, b] = [d[i], d[i + 1], d[i + 2]];
        if (r > 120 && r > 2 * gr && r > 2 * b) red += 1;
        const max = Math.max(r, gr, b);
        const min = Math.min(r, gr, b);
        if (hueA < 0 || max < 60 || max - min < 0.3 * max) continue;
        let h = max === r ? ((gr - b) / (max - min)) % 6 : max === gr ? (b - r) / (max - min) + 2 : (r - gr) / (max - min) + 4;
        h = (h * 60 + 360) % 360;
        if (Math.min(Math.abs(h - hueA), 360 - Math.abs(h - hueA)) < 20) authorA += 1;
      }
      return { red, authorA };
    }, [shot.toString('base64'), hue]);
  };
  let red = 0;
  for (const end = performance.now() + 5000; red <= 300 && performance.now() < end; ) {
    red = (await bPixels('viewer-canvas')).red;
  }
  check('B canvas shows the red cube', red > 300, `${red} red pixels`);
  report.viewerRedPixels = red;

  // B is a viewer: tools are disabled, the reason is on screen, and trying anyway says why.
  check('B add is disabled', await B.page.getByRole('button', { name: 'Add cube' }).isDisabled());
  const banner = await B.page.getByRole('note').textContent();
  check('B is told it is view only', /viewer role/.test(banner ?? ''), banner ?? '');
  await B.page.locator('.outliner button[data-entity]').first().click();
  await B.page.keyboard.press('Delete');
  const toast = await B.page.getByRole('alert').first().textContent({ timeout: 2000 });
  check('B deleting is refused with the reason', /View only/.test(toast ?? ''), toast ?? '');
  check('B scene unchanged', (await state(B.page)).entities === 1);

  // A reloads: the scene comes back from the server, the identity from IndexedDB.
  const authorBefore = (await state(A.page)).author;
  // Presence across a rejoin: B draws A's cursor where A points; after the reload (a new
  // connection, whose presence numbers start again from 1) B draws it where A points next
  // within 1 s.
  const cursorOf = (page, author, unlike) =>
    page
      .waitForFunction(([a, old]) => {
        const c = window.meshwork.markers().find((m) => m.author === a)?.cursor ?? null;
        return c !== null && JSON.stringify(c) !== old ? c : null;
      }, [author, JSON.stringify(unlike)], { timeout: 5000, polling: 10 })
      .then((h) => h.jsonValue(), () => null);
  await A.page.mouse.move(520, 600, { steps: 4 });
  const cursorBefore = await cursorOf(B.page, authorBefore, null);
  check("B draws A's cursor", cursorBefore !== null);
  await A.page.screenshot({ path: join(artifacts, 'editor-a.png') });
  await B.page.screenshot({ path: join(artifacts, 'viewer-b.png') });
  await A.page.reload();
  await A.page.waitForSelector('[data-testid=connection][data-state=live]', { timeout: 20000 });
  const rejoined = performance.now();
  await A.page.mouse.move(760, 640, { steps: 4 });
  const cursorAfter = await cursorOf(B.page, authorBefore, cursorBefore);
  const rejoinMs = performance.now() - rejoined;
  check("B draws the rejoined A's cursor within 1 s", cursorAfter !== null && rejoinMs <= 1000,
    `${JSON.stringify(cursorBefore)} -> ${JSON.stringify(cursorAfter)} after ${rejoinMs.toFixed(0)} ms`);
  report.rejoinCursorMs = rejoinMs;
  await A.page.locator('.outliner button[data-entity]').first().waitFor();
  const reloaded = await A.page.locator('.outliner button[data-translation]').first().getAttribute('data-translation');
  check('reload keeps the scene', reloaded === moved, `${reloaded} vs ${moved}`);
  check('reload keeps the identity', (await state(A.page)).author === authorBefore);

  // C: WebRTC blocked (signaling refused) → the WebSocket fallback, by itself.
  const C = await open('C', editorTicket, (ctx) =>
    ctx.route('**/api/v1/sessions/*/rtc', (route) => route.abort()),
  );
  const c0 = await state(C.page);
  check('C fell back to the WebSocket', c0.transport === 'websocket', JSON.stringify(c0));
  const status = await C.page.getByTestId('connection').textContent();
  check('C shows the transport in use', /WebSocket/.test(status ?? ''), status ?? '');
  await C.page.getByRole('button', { name: 'Add pyramid' }).click();
  await A.page.waitForFunction(() => window.meshwork.state().entities === 2, null, { timeout: 5000 });
  await B.page.waitForFunction(() => window.meshwork.state().entities === 2, null, { timeout: 5000 });
  check(
    'the WebSocket client edits with the others',
    (await state(A.page)).entities === 2 && (await state(B.page)).entities === 2,
  );

  // Several objects: C Shift+clicks both in the outliner; both are selected, the one clicked
  // last active; a click without Shift selects one again.
  const rows = C.page.locator('.outliner button[data-entity]');
  await rows.nth(0).click();
  await rows.nth(1).click({ modifiers: ['Shift'] });
  const pressed = await C.page.locator('.outliner button[aria-pressed=true]').count();
  check('Shift+click selects several objects', pressed === 2, String(pressed));
  await rows.nth(1).click();
  check('a plain click selects one again', (await C.page.locator('.outliner button[aria-pressed=true]').count()) === 1);

  // Undo: A renames the cube, presses Ctrl+Z, and C sees the old name back within 1 s.
  const cube = await A.page.locator('.outliner button[data-entity]').first().getAttribute('data-entity');
  const cubeAt = (page) => page.locator(`.outliner button[data-entity="${cube}"]`);
  const nameAt = async (page) => (await cubeAt(page).textContent()) ?? '';
  await cubeAt(A.page).click();
  const rename = async (page, name) => {
    const field = page.getByRole('textbox', { name: 'Name', exact: true });
    await field.fill(name);
    await field.press('Enter');
  };
  const waitName = async (page, test, ms) => {
    const start = performance.now();
    for (;;) {
      const text = await nameAt(page);
      const elapsed = performance.now() - start;
      if (test(text)) return elapsed;
      if (elapsed > ms) return { late: elapsed, last: text };
      await page.waitForTimeout(10);
    }
  };
  await rename(A.page, 'Table');
  const named = await waitName(C.page, (t) => t.startsWith('Table'), 5000);
  check('C sees the rename', typeof named === 'number', JSON.stringify(named));
  await A.page.locator('body').press('Control+z');
  const undoMs = await waitName(C.page, (t) => !t.startsWith('Table'), 1000);
  check("C sees A's Ctrl+Z revert the rename within 1 s", typeof undoMs === 'number', JSON.stringify(undoMs));
  report.undoToOtherMs = undoMs;
  // A renames again, C renames over it, and A's undo is refused naming C.
  await rename(A.page, 'Chair');
  check('C sees the second rename', typeof (await waitName(C.page, (t) => t.startsWith('Chair'), 5000)) === 'number');
  await cubeAt(C.page).click();
  await rename(C.page, 'Stool');
  check('A sees C rename it', typeof (await waitName(A.page, (t) => t.startsWith('Stool'), 5000)) === 'number');
  const cAuthor = (await state(C.page)).author;
  await A.page.locator('body').press('Control+z');
  const refusal = await A.page
    .locator('.toast.error', { hasText: 'Cannot undo' })
    .last()
    .textContent({ timeout: 5000 })
    .catch(() => null);
  check('A is told the undo is refused because C changed it', refusal !== null && refusal.includes(`Author ${cAuthor}`),
    String(refusal));
  // The outliner may be mid-render when read: poll (had the undo applied, it would never
  // read "Stool" again).
  const unchanged = await C.page
    .waitForFunction((id) => document.querySelector(`.outliner button[data-entity="${id}"]`)?.textContent?.startsWith('Stool'), cube, { timeout: 2000 })
    .then(() => true, () => false);
  check('the refused undo changed nothing', unchanged, await nameAt(C.page));
  // The History panel: both people's steps, the undone rename struck through.
  const listed = await A.page
    .waitForFunction((c) => {
      const rows = [...document.querySelectorAll('[data-testid=history] li')].map((li) => li.textContent ?? '');
      return rows.some((r) => r.startsWith('You')) && rows.some((r) => r.startsWith(`Author ${c}`))
        && document.querySelector('[data-testid=history] button[data-undone=true] s') !== null;
    }, cAuthor, { timeout: 5000 })
    .then(() => true, () => false);
  check('the History panel lists both people, the undone step struck through', listed,
    JSON.stringify(await A.page.getByTestId('history').textContent()));
  await A.page.screenshot({ path: join(artifacts, 'history-a.png') });

  // Edit mode: A edits the cube's mesh — Tab, face selection (3), a click on the top face, E and
  // the mouse up, a click — and C sees the extruded mesh.
  await cubeAt(A.page).click();
  const edit = (page) => page.evaluate(() => window.meshwork.edit());
  await A.page.locator('body').press('Tab');
  check('Tab enters edit mode on the selected cube', (await edit(A.page)).mode === 'edit', JSON.stringify(await edit(A.page)));
  await A.page.locator('body').press('3');
  const top = await A.page.evaluate(() => window.meshwork.topFace());
  const [fx, fy] = await A.page.evaluate((i) => window.meshwork.faceCentre(i), top);
  await A.page.mouse.click(fx, fy);
  const picked = await edit(A.page);
  check('a click selects the top face', picked.elementMode === 'face' && picked.selection.length === 1, JSON.stringify(picked));
  const trianglesBefore = await C.page.evaluate(() => window.meshwork.triangles());
  // B (watching, in object mode) counts pixels on its canvas: the cube's red, and A's colour,
  // in which B draws A's live extrude.
  const aHue = Math.round(((await state(A.page)).author * 137.508) % 360);
  const bBefore = await bPixels('extrude-before-b', aHue);
  await A.page.locator('body').press('e');
  await A.page.mouse.move(fx, fy - 90, { steps: 9 });
  check('E starts an extrude that follows the mouse', (await edit(A.page)).extruding === true);
  // Before A clicks: C already shows A's extrude, computed from A's live preview.
  const previewSeen = await C.page
    .waitForFunction((id) => window.meshwork.remoteEdits().includes(Number(id)), cube, { timeout: 1000 })
    .then(() => true, () => false);
  check("C sees A's extrude preview before A releases", previewSeen, JSON.stringify(await C.page.evaluate(() => window.meshwork.remoteEdits())));
  // B's pixels: the cube is drawn in A's colour while A drags (B's canvas, before the release).
  let bDuring = await bPixels('extrude-preview-b', aHue);
  for (const end = performance.now() + 3000; bDuring.authorA < bBefore.authorA + 500 && performance.now() < end; ) {
    bDuring = await bPixels('extrude-preview-b', aHue);
  }
  check("B's canvas shows A's extrude in A's colour before A releases", bDuring.authorA >= bBefore.authorA + 500,
    `A's colour ${bBefore.authorA} -> ${bDuring.authorA} px, red ${bBefore.red} -> ${bDuring.red} px`);
  report.extrudePreviewPixelsAtB = { before: bBefore, during: bDuring };
  await C.page.screenshot({ path: join(artifacts, 'extrude-preview-c.png') });
  await A.page.screenshot({ path: join(artifacts, 'extrude-preview-a.png') });
  // Meanwhile C edits the same cube: a bottom corner (not part of A's extrude), grabbed with G.
  await cubeAt(C.page).click();
  await C.page.locator('body').press('Tab');
  await C.page.locator('body').press('1');
  const corner = await C.page.evaluate(() => window.meshwork.lowestVertex());
  const [vx, vy] = await C.page.evaluate((i) => window.meshwork.vertexAt(i), corner);
  const centre = (await cubeAt(C.page).getAttribute('data-translation')).split(',').map(Number);
  const [cx, cy] = await C.page.evaluate((p) => window.meshwork.project(p), centre);
  // Just inside a face next to the corner: the nearest corner of the face hit is the one picked.
  await C.page.mouse.click(vx + (cx - vx) * 0.12, vy + (cy - vy) * 0.12);
  const cPicked = await edit(C.page);
  check('C picks a vertex in vertex mode', cPicked.elementMode === 'vertex' && cPicked.selection.length === 1, JSON.stringify(cPicked));
  // Each sees the other's element selection in their colour (A: the top face, C: a corner).
  const aAuthor = (await state(A.page)).author;
  const cAuthorNow = (await state(C.page)).author;
  const seesA = await C.page
    .waitForFunction((a) => window.meshwork.remoteSelections().some(([who]) => who === a), aAuthor, { timeout: 3000 })
    .then(() => true, () => false);
  const seesC = await A.page
    .waitForFunction((c) => window.meshwork.remoteSelections().some(([who]) => who === c), cAuthorNow, { timeout: 3000 })
    .then(() => true, () => false);
  check("each sees the other's selected elements", seesA && seesC,
    JSON.stringify([await C.page.evaluate(() => window.meshwork.remoteSelections()), await A.page.evaluate(() => window.meshwork.remoteSelections())]));
  await C.page.screenshot({ path: join(artifacts, 'element-selections-c.png') });
  await C.page.locator('body').press('g');
  await C.page.mouse.move(vx + 40, vy + 10, { steps: 5 });
  check('G grabs the selected vertex', (await edit(C.page)).grabbing === true);
  const hashBefore = await A.page.evaluate(() => window.meshwork.state().hash);
  await C.page.mouse.click(vx + 40, vy + 10);
  const cMoved = await A.page
    .waitForFunction((h) => window.meshwork.state().hash !== h, hashBefore, { timeout: 5000 })
    .then(() => true, () => false);
  check("A receives C's vertex move while A's extrude is still open", cMoved && (await edit(A.page)).extruding === true);
  await A.page.mouse.click(fx, fy - 90);
  const extruded = await C.page
    .waitForFunction((n) => window.meshwork.triangles() === n + 8, trianglesBefore, { timeout: 5000 })
    .then(() => true, () => false);
  check("C sees A's extrude (a quad's four new sides: 8 more triangles)", extruded,
    `${trianglesBefore} -> ${await C.page.evaluate(() => window.meshwork.triangles())}`);
  await A.page.waitForFunction(() => !document.querySelector('.editor')?.dataset.extruding, null, { timeout: 5000 });
  const previewGone = await C.page
    .waitForFunction(() => window.meshwork.remoteEdits().length === 0, null, { timeout: 5000 })
    .then(() => true, () => false);
  check("the preview gives way to the committed mesh at C", previewGone);
  // And on B's canvas: the taller cube in its own red, A's colour gone back to what it was.
  let bAfter = await bPixels('extrude-after-b', aHue);
  const committedAtB = (p) => p.red > bBefore.red + 200 && p.authorA < bBefore.authorA + 300;
  for (const end = performance.now() + 3000; !committedAtB(bAfter) && performance.now() < end; ) {
    bAfter = await bPixels('extrude-after-b', aHue);
  }
  check("B's canvas shows the committed extrude (more red, A's colour gone)", committedAtB(bAfter),
    `red ${bBefore.red} -> ${bAfter.red} px, A's colour ${bBefore.authorA} -> ${bAfter.authorA} px`);
  report.extrudePreviewPixelsAtB.after = bAfter;
  // B and a drag: a box around the whole cube selects every face of it (seen through, as X-ray).
  await A.page.locator('body').press('b');
  await A.page.mouse.move(fx - 220, fy - 260);
  await A.page.mouse.down();
  await A.page.mouse.move(fx + 220, fy + 260, { steps: 6 });
  await A.page.mouse.up();
  const boxed = await edit(A.page);
  check('B and a drag box-select every face of the extruded cube', boxed.selection.length === 10, JSON.stringify(boxed));
  // S scales the selection about its centre as the mouse moves away from it; a click commits.
  const beforeScale = await C.page.evaluate(() => window.meshwork.state().hash);
  await A.page.mouse.move(fx + 40, fy + 40);
  await A.page.locator('body').press('s');
  await A.page.mouse.move(fx + 80, fy + 80, { steps: 4 });
  check('S scales the selected elements', (await edit(A.page)).grabbing === true);
  await A.page.mouse.click(fx + 80, fy + 80);
  const scaled = await C.page
    .waitForFunction((h) => window.meshwork.state().hash !== h, beforeScale, { timeout: 5000 })
    .then(() => true, () => false);
  check("C sees A's scale of the selected faces", scaled);
  // The gizmo (the Move tool) on the selected elements: A drags its X handle, C sees the move.
  await A.page.getByRole('button', { name: 'Move', exact: true }).click();
  const gizmoOn = await A.page
    .waitForFunction(() => window.meshwork.editGizmoAxis('x') !== null, null, { timeout: 5000 })
    .then(() => true, () => false);
  check('the gizmo stands on the selected elements', gizmoOn, JSON.stringify({
    edit: await edit(A.page),
    tools: await A.page.locator('.palette button[aria-pressed=true]').allTextContents(),
  }));
  const handle = await A.page.evaluate(() => window.meshwork.editGizmoAxis('x'));
  const beforeGizmo = await C.page.evaluate(() => window.meshwork.state().hash);
  await A.page.mouse.move(...handle.grab);
  await A.page.mouse.down();
  await A.page.mouse.move(...handle.along, { steps: 8 });
  await A.page.mouse.up();
  const gizmoMoved = await C.page
    .waitForFunction((h) => window.meshwork.state().hash !== h, beforeGizmo, { timeout: 5000 })
    .then(() => true, () => false);
  check("C sees the elements A dragged with the gizmo", gizmoMoved);
  await A.page.screenshot({ path: join(artifacts, 'extrude-done-a.png') });
  await C.page.screenshot({ path: join(artifacts, 'extrude-seen-c.png') });
  await A.page.locator('body').press('Tab');
  await C.page.locator('body').press('Tab');
  check('Tab goes back to object mode', (await edit(A.page)).mode === 'object' && (await edit(C.page)).mode === 'object');
  const toastsA = await A.page.locator('.toast.error').allTextContents();
  check('neither edit was refused', !toastsA.some((t) => /topology|conflict/i.test(t)), JSON.stringify(toastsA));

  // "Export glTF" (a viewer may export what it sees): the download passes the validator.
  const [download] = await Promise.all([
    B.page.waitForEvent('download', { timeout: 10000 }),
    B.page.getByTestId('export-gltf').click(),
  ]);
  const glb = new Uint8Array(await readFile(await download.path()));
  const validation = await validator.validateBytes(glb);
  const { numErrors, numWarnings } = validation.issues;
  check('the exported GLB passes the Khronos validator', numErrors === 0 && numWarnings === 0,
    JSON.stringify(validation.issues.messages.slice(0, 5)));
  // GLB: a 12-byte header, then the JSON chunk (length, type, bytes).
  const jsonLength = new DataView(glb.buffer, glb.byteOffset).getUint32(12, true);
  const doc = JSON.parse(new TextDecoder().decode(glb.subarray(20, 20 + jsonLength)));
  check('the export holds both entities', doc.nodes?.length === 2, JSON.stringify(doc.nodes));
  report.exportBytes = glb.length;

  // Import by drag-and-drop: A drops the exported file on its view; it is uploaded (progress
  // shown), imported as one step, and B (a viewer) sees the new objects.
  const before = (await state(B.page)).entities;
  // Every text the top bar's import status shows, recorded as it changes.
  await A.page.evaluate(() => {
    window.importTexts = [];
    const el = document.querySelector('[data-testid=import-status]');
    new MutationObserver(() => window.importTexts.push(el.textContent)).observe(el, {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
  await A.page.evaluate(async (bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'scene.glb', { type: 'model/gltf-binary' }));
    document.querySelector('[data-testid=viewport]').dispatchEvent(
      new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }),
    );
  }, Array.from(glb));
  const imported = await B.page
    .waitForFunction((n) => window.meshwork.state().entities === n + 2, before, { timeout: 10000 })
    .then(() => true, () => false);
  check('B sees the objects A imported by drag-and-drop', imported,
    `${before} -> ${(await state(B.page)).entities} entities`);
  const shown = await A.page.evaluate(() => window.importTexts);
  check('A sees the upload progress', shown.some((t) => /^Uploading scene\.glb: 100 %$/.test(t)), JSON.stringify(shown));
  const importToast = await A.page.locator('.toast').allTextContents();
  check('A is told what was imported', importToast.some((t) => /Imported scene\.glb: 2 objects/.test(t)), JSON.stringify(importToast));
  await B.page.screenshot({ path: join(artifacts, 'import-seen-by-b.png') });
  // A exports what is there now: the imported objects too, and still valid.
  const [downloadA] = await Promise.all([
    A.page.waitForEvent('download', { timeout: 10000 }),
    A.page.getByTestId('export-gltf').click(),
  ]);
  const glbA = new Uint8Array(await readFile(await downloadA.path()));
  const validationA = await validator.validateBytes(glbA);
  const nodesA = JSON.parse(
    new TextDecoder().decode(glbA.subarray(20, 20 + new DataView(glbA.buffer, glbA.byteOffset).getUint32(12, true))),
  ).nodes;
  check("A's export after the import passes the validator and holds all four objects",
    validationA.issues.numErrors === 0 && validationA.issues.numWarnings === 0 && nodesA?.length === 4,
    JSON.stringify({ issues: validationA.issues.messages.slice(0, 3), nodes: nodesA?.length }));

  // Reconnect: A's connection is cut; A keeps editing (an offline edit, shown as pending), the
  // editor reconnects by itself, the edit is judged and B sees it; replicas agree.
  const entitiesAtB = (await state(B.page)).entities;
  await A.page.evaluate(() => window.meshwork.dropConnection());
  await A.page.waitForSelector('[data-testid=connection][data-state=reconnecting]', { timeout: 5000 });
  const entitiesAtA = (await state(A.page)).entities;
  await A.page.getByRole('button', { name: 'Add sphere' }).click();
  const pendingOffline = Number(await A.page.getByTestId('connection').getAttribute('data-pending'));
  check('A edits while offline, the edit shown as pending', pendingOffline >= 1,
    String(await A.page.getByTestId('connection').textContent()));
  const shownOffline = await A.page
    .waitForFunction((n) => window.meshwork.state().entities === n + 1, entitiesAtA, { timeout: 2000 })
    .then(() => true, () => false);
  check('A sees its offline sphere at once', shownOffline, JSON.stringify(await state(A.page)));
  await A.page.waitForSelector('[data-testid=connection][data-state=live]', { timeout: 15000 });
  const landedAtB = await B.page
    .waitForFunction((n) => window.meshwork.state().entities === n + 1, entitiesAtB, { timeout: 10000 })
    .then(() => true, () => false);
  check('A reconnects by itself and B sees the offline edit', landedAtB,
    JSON.stringify({ a: await state(A.page), b: await state(B.page) }));
  const noPending = await A.page
    .waitForFunction(() => document.querySelector('[data-testid=connection]')?.getAttribute('data-pending') === '0', null, {
      timeout: 10000,
    })
    .then(() => true, () => false);
  check('nothing is left pending after the reconnect', noPending, String(await A.page.getByTestId('connection').textContent()));

  // Offline edits that survive a reload: A's transports are blocked (signaling, the WebSocket)
  // and its connection cut; C deletes the sphere A added; A, offline, deletes it too (a
  // conflict) and adds a cube, reloads while still offline (the edits are kept in IndexedDB),
  // then the network comes back: the add lands at B, the delete is refused with its reason.
  let blocked = true;
  await A.page.route(/\/api\/v1\/sessions\/[^/]+\/rtc/, (r) => (blocked ? r.abort() : r.continue()));
  await A.page.route(/\/api\/v1\/server\?/, (r) => (blocked ? r.abort() : r.continue()));
  await A.page.routeWebSocket(/\/api\/v1\/sessions\/.*\/ws$/, (ws) => (blocked ? ws.close() : ws.connectToServer()));
  const sphere = await A.page.evaluate(() => window.meshwork.state().entities);
  const sphereId = await A.page
    .locator('.outliner button[data-entity]', { hasText: 'Sphere' })
    .first()
    .getAttribute('data-entity');
  await A.page.evaluate(() => window.meshwork.dropConnection());
  await A.page.waitForSelector('[data-testid=connection][data-state=reconnecting]', { timeout: 5000 });
  const atB = (await state(B.page)).entities;
  await C.page.evaluate((id) => window.meshwork.submit([{ Despawn: { entity: Number(id) } }]), sphereId);
  const goneAtB = await B.page
    .waitForFunction((n) => window.meshwork.state().entities === n - 1, atB, { timeout: 5000 })
    .then(() => true, () => false);
  check('C deletes the sphere while A is offline', goneAtB);
  await A.page.locator(`.outliner button[data-entity="${sphereId}"]`).click();
  await A.page.getByRole('button', { name: 'Delete', exact: true }).click();
  await A.page.getByRole('button', { name: 'Add cube' }).click();
  // Everything pending is kept (the state is saved 300 ms after the last change).
  const kept = await A.page
    .waitForFunction(() => {
      const pending = Number(document.querySelector('[data-testid=connection]')?.getAttribute('data-pending'));
      return pending >= 2 && window.meshwork.keptPending() === pending;
    }, null, { timeout: 5000 })
    .then(() => true, () => false);
  check('A\'s offline edits are kept for a reload', kept, String(await A.page.getByTestId('connection').textContent()));
  // The delete and the add, each with the selection change the editor sends with it.
  const pendingBefore = Number(await A.page.getByTestId('connection').getAttribute('data-pending'));
  await A.page.reload();
  await A.page.waitForSelector('[data-testid=connection][data-state=reconnecting]', { timeout: 20000 });
  const restored = Number(await A.page.getByTestId('connection').getAttribute('data-pending'));
  check('after the reload, still offline, the edits are pending', restored === pendingBefore && restored >= 2,
    String(await A.page.getByTestId('connection').textContent()));
  check('the reloaded page shows the scene it had', (await state(A.page)).entities === sphere,
    JSON.stringify(await state(A.page)));
  blocked = false;
  await A.page.waitForSelector('[data-testid=connection][data-state=live]', { timeout: 30000 });
  const addLanded = await B.page
    .waitForFunction((n) => window.meshwork.state().entities === n, atB, { timeout: 10000 })
    .then(() => true, () => false);
  check('B sees the cube A added offline', addLanded, JSON.stringify(await state(B.page)));
  const refusedShown = await A.page
    .locator('.toast')
    .filter({ hasText: 'Conflict' })
    .first()
    .textContent({ timeout: 10000 })
    .catch(() => null);
  check('A sees its offline delete refused, with the reason', refusedShown !== null, String(refusedShown));
  const emptied = await A.page
    .waitForFunction(() => document.querySelector('[data-testid=connection]')?.getAttribute('data-pending') === '0', null, {
      timeout: 10000,
    })
    .then(() => true, () => false);
  check('nothing pending once both are judged', emptied);
  const kept0 = await A.page
    .waitForFunction(() => window.meshwork.keptPending() === 0, null, { timeout: 5000 })
    .then(() => true, () => false);
  check('what was kept for the reload is forgotten', kept0);
  await A.page.screenshot({ path: join(artifacts, 'offline-reload-a.png') });

  // Telemetry overlay toggles with T.
  await A.page.locator('body').press('t');
  const rtt = await A.page.getByLabel('Telemetry').textContent();
  check('telemetry overlay', /RTT/.test(rtt ?? '') && /Commands\/s/.test(rtt ?? ''), rtt ?? '');
  // Everyone present in A's top bar (presence heartbeats), then the README screenshots.
  const present = await A.page
    .waitForFunction(() => document.querySelectorAll('.people li').length >= 3, null, { timeout: 5000 })
    .then(() => true, () => false);
  check('A sees the other people present', present, await A.page.locator('.people').textContent());
  await A.page.screenshot({ path: join(artifacts, 'two-users-a.png') });
  await C.page.screenshot({ path: join(artifacts, 'two-users-c.png') });

  // The landing page: an admin creates a session and mints an invite link; the link works.
  const adminCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const landing = await adminCtx.newPage();
  await landing.goto(`${base}/`);
  await landing.getByLabel('Admin token').fill(adminToken);
  await landing.getByLabel('New session name').fill('Review');
  await landing.getByRole('button', { name: 'Create session' }).click();
  await landing.getByRole('combobox', { name: 'Session' }).locator('option', { hasText: 'Review' }).waitFor({ state: 'attached' });
  await landing.getByRole('combobox', { name: 'Role' }).selectOption('editor');
  await landing.getByRole('button', { name: 'Create invite' }).click();
  const invite = await landing.locator('a[data-role=editor]').first().getAttribute('href');
  check('the admin UI mints an invite link', /#\/join\/mwj1_/.test(invite ?? ''), invite ?? '');
  // An invite for one person, listed with its uses, then revoked: opening it is refused, with
  // the reason.
  await landing.getByRole('combobox', { name: 'Role' }).selectOption('viewer');
  await landing.getByLabel('People it admits').fill('1');
  await landing.getByRole('button', { name: 'Create invite' }).click();
  const single = await landing.locator('a[data-role=viewer]').first().getAttribute('href');
  const row = landing.locator('.invite-list li[data-state=active]', { hasText: 'used 0 of 1' }).first();
  await row.waitFor({ timeout: 5000 });
  check('the admin UI lists the one-person invite with its uses', await row.isVisible());
  await row.getByRole('button', { name: 'Revoke' }).click();
  const revoked = await landing.locator('.invite-list li[data-state=revoked]').first()
    .waitFor({ timeout: 5000 }).then(() => true, () => false);
  check('the admin UI revokes it', revoked);
  const refusedPage = await adminCtx.newPage();
  refusedPage.on('console', (m) => {
    if (m.type() === 'error') console.error(`[refused] ${m.text()}`);
  });
  await refusedPage.goto(single);
  const refusedText = await refusedPage.locator('.toast', { hasText: 'revoked' }).first()
    .textContent({ timeout: 15000 }).catch(() => null);
  check('the revoked invite is refused with the reason', refusedText !== null, String(refusedText));
  await refusedPage.close();
  await landing.goto(invite);
  await landing.waitForSelector('[data-testid=connection][data-state=live]', { timeout: 20000 });
  const fresh = await state(landing);
  check('the minted link opens the new, empty session', fresh.entities === 0 && fresh.role === 'editor', JSON.stringify(fresh));

  report.hashes = {
    A: (await state(A.page)).hash,
    B: (await state(B.page)).hash,
    C: (await state(C.page)).hash,
  };

  // A member leaves: C selects the cube and points at the scene; B draws C's outline and
  // cursor; C closes its tab, and both go from B's view (the server tells everyone who left).
  const cLeaving = (await state(C.page)).author;
  await C.page.locator('.outliner button[data-entity]').first().click();
  await C.page.mouse.move(600, 620, { steps: 4 });
  const drawnOf = (author) => B.page.evaluate((a) => ({
    cursor: window.meshwork.markers().some((m) => m.author === a),
    outline: window.meshwork.outlines().some(([by]) => by === a),
  }), author);
  const shownBefore = await B.page
    .waitForFunction((a) => window.meshwork.markers().some((m) => m.author === a && m.cursor)
      && window.meshwork.outlines().some(([by]) => by === a), cLeaving, { timeout: 5000 })
    .then(() => true, () => false);
  check("B draws C's cursor and selection", shownBefore, JSON.stringify(await drawnOf(cLeaving)));
  const closing = performance.now();
  await C.context.close();
  const gone = await B.page
    .waitForFunction((a) => !window.meshwork.markers().some((m) => m.author === a)
      && !window.meshwork.outlines().some(([by]) => by === a), cLeaving, { timeout: 5000, polling: 10 })
    .then(() => true, () => false);
  report.leaveToGoneMs = performance.now() - closing;
  check("C's cursor and selection go from B's view when C leaves", gone,
    `${JSON.stringify(await drawnOf(cLeaving))} after ${report.leaveToGoneMs.toFixed(0)} ms`);
});
