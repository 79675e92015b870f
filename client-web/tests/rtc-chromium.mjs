// Drives Debian's Chromium (Playwright, executablePath /usr/bin/chromium: no downloaded
// browsers) to a test page that joins a real Meshwork server over WebRTC through the wasm
// protocol package, submits a signed command and waits until it is applied; prints the page's
// result as JSON. Used by server/tests/browser_webrtc.rs, inside a loopback-only network
// namespace (`unshare -n`).
//   node rtc-chromium.mjs <http host:port> <ticket> <session id>
// The page and the wasm package are served from this checkout by request interception under
// /__test/ on the server's own origin, so signaling is same-origin like the real editor.
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [addr, ticket, session] = process.argv.slice(2);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
  ],
});
let code = 1;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`[page] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  await page.route(`http://${addr}/__test/**`, async (route) => {
    const path = normalize(new URL(route.request().url()).pathname.replace('/__test/', ''));
    if (!(path.startsWith('pkg/') || path.startsWith('tests/rtc-page/'))) {
      return route.fulfill({ status: 404, body: 'not a test file' });
    }
    try {
      const body = await readFile(join(root, path));
      return route.fulfill({ status: 200, body, contentType: types[extname(path)] ?? 'text/plain' });
    } catch (e) {
      return route.fulfill({ status: 404, body: String(e) });
    }
  });
  await page.goto(`http://${addr}/__test/tests/rtc-page/index.html`);
  await page.waitForFunction(() => typeof window.meshworkRtcTest === 'function', null, { timeout: 15000 });
  const result = await page.evaluate(([t, s]) => window.meshworkRtcTest(t, s), [ticket, session]);
  console.log(JSON.stringify(result));
  code = 0;
} catch (e) {
  console.error(e);
} finally {
  await browser.close();
}
process.exit(code);
