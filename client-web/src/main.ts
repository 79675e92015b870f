// Entry: `#/join/<ticket>` opens the editor; anything else the landing page.
// `?transport=websocket` skips WebRTC (for networks known to block UDP).

import { Editor } from './editor';
import { identitySeed, loadPending } from './identity';
import { landing } from './landing';
import { loadWasm, ticketSession } from './session';
import { parseRoute } from './state';
import './style.css';

async function route(): Promise<void> {
  const app = document.getElementById('app') as HTMLElement;
  const r = parseRoute(location.hash);
  if (r.kind === 'landing') {
    landing(app);
    return;
  }
  try {
    await loadWasm();
    const session = ticketSession(r.ticket);
    if (!session) throw new Error('the invite cannot be read: ask for a new one');
    const prefer = new URLSearchParams(location.search).get('transport') === 'websocket' ? 'websocket' : null;
    // Edits kept while offline (a reload before they reached the server) go on from there.
    const saved = await loadPending(session).catch(() => null);
    const editor = new Editor(await identitySeed(), r.ticket, session, prefer, saved);
    await editor.mount(app);
  } catch (e) {
    const p = document.createElement('p');
    p.className = 'fatal';
    p.setAttribute('role', 'alert');
    p.textContent = `Meshwork could not start: ${(e as Error).message}`;
    app.replaceChildren(p);
  }
}

window.addEventListener('hashchange', () => location.reload());
void route();
