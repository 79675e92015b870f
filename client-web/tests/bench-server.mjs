// What the editor benchmarks share: a real server serving the built editor (a fresh data dir,
// generous rate limits so bulk edits are not throttled), an editor's ticket to it, and Debian's
// Chromium with WebGPU on SwiftShader.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** Starts `bin` serving `client-web/dist`; resolves to `{ server, http, ticket }`. */
export async function startServer(bin, prefix = 'meshwork-bench-') {
  const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
  const data = mkdtempSync(join(tmpdir(), prefix));
  const server = spawn(bin, [
    'serve', '--http-addr', '127.0.0.1:0', '--quic-addr', '127.0.0.1:0', '--rtc-addr', '127.0.0.1:0',
    '--data-dir', data, '--web-dir', dist, '--rate-per-s', '100000', '--burst', '100000',
  ], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, MESHWORK_LOG: 'warn' } });
  const http = await new Promise((resolve, reject) => {
    createInterface({ input: server.stdout }).on('line', (line) => {
      const m = /^listening: http=(\S+)/.exec(line);
      if (m) resolve(m[1]);
    });
    server.on('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
  const ticket = execFileSync(bin, ['invite', '--data-dir', data, '--role', 'editor'], { encoding: 'utf8' })
    .split(/\s+/)
    .find((w) => w.startsWith('mwj1_'));
  return { server, http, ticket };
}

/** Debian's Chromium, headless, WebGPU on SwiftShader, WebRTC on loopback. */
export function launchChromium() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
      '--use-angle=swiftshader', '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
}
