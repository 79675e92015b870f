// What the browser end-to-end scripts share: Debian's Chromium with WebGPU on SwiftShader and
// WebRTC on loopback, a report of named checks, and editor pages opened from a join link.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** Launches Chromium and returns the harness for the editor served at `addr` (`host:port`). */
export async function harness(addr, artifacts) {
  const base = `http://${addr}`;
  const link = (t) => `${base}/#/join/${encodeURIComponent(t)}`;
  await mkdir(artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--enable-unsafe-webgpu',
      '--enable-features=Vulkan',
      '--use-vulkan=swiftshader',
      '--use-angle=swiftshader',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const report = { checks: [] };
  /** Records a check; the first failed one ends the script (with the report so far). */
  const check = (name, ok, detail = '') => {
    report.checks.push({ name, ok, detail });
    if (!ok) throw new Error(`${name}: ${detail}`);
  };
  /** Opens the editor on `ticket` in a fresh browser context (its own identity), `setup`
   *  first (routes), and waits until it is live. Everyone but `A` answers the first visit's
   *  name question with "Not now", as a user who just wants to look would. */
  const open = async (name, ticket, setup) => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    if (setup) await setup(context);
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') console.error(`[${name}] ${m.text()}`);
    });
    page.on('pageerror', (e) => console.error(`[${name} error] ${e.message}`));
    await page.goto(link(ticket));
    try {
      await page.waitForSelector('[data-testid=connection][data-state=live]', { timeout: 20000 });
    } catch (e) {
      await page.screenshot({ path: join(artifacts, `${name}-failed.png`) }).catch(() => {});
      const status = await page.locator('[data-testid=connection]').textContent().catch(() => '?');
      const toasts = await page.locator('.toast').allTextContents().catch(() => []);
      throw new Error(`${name} did not go live (status "${status}", toasts ${JSON.stringify(toasts)}): ${e.message}`);
    }
    if (name !== 'A') await page.getByTestId('name-form').getByRole('button', { name: 'Not now' }).click();
    return { context, page };
  };
  const state = (page) => page.evaluate(() => window.meshwork.state());
  /** Runs the scenario, closes the browser and exits: 0 with the report as the last line of
   *  stdout, else 1 with the error and the report so far on stderr. */
  const run = async (scenario) => {
    let code = 1;
    try {
      await scenario();
      console.log(JSON.stringify(report));
      code = 0;
    } catch (e) {
      console.error(e);
      console.error(JSON.stringify(report));
    } finally {
      await browser.close();
    }
    process.exit(code);
  };
  return { base, link, browser, report, check, open, state, run };
}
