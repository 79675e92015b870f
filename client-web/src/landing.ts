// The landing page: paste an invite to join; admins (with the token the server printed on first
// start) create sessions and mint invite links.

import { inviteLink, ticketFromPaste } from './state';

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...kids: (Node | string)[]) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...kids);
  return e;
}

async function api(path: string, token: string, body?: unknown, method?: string): Promise<unknown> {
  const res = await fetch(path, {
    method: method ?? (body === undefined ? 'GET' : 'POST'),
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return {};
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((json as { error?: string }).error ?? `HTTP ${res.status}`);
  return json;
}

export function landing(into: HTMLElement): void {
  const paste = el('textarea', { id: 'invite', rows: '3', placeholder: 'mwj1_… or https://…/#/join/mwj1_…' });
  const joinError = el('p', { class: 'error', role: 'alert', hidden: '' });
  const join = el('button', { type: 'submit' }, 'Join');
  const joinForm = el(
    'form',
    { 'aria-labelledby': 'join-h' },
    el('h2', { id: 'join-h' }, 'Join a session'),
    el('label', { for: 'invite' }, 'Invite link or ticket'),
    paste,
    join,
    joinError,
  );
  joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const ticket = ticketFromPaste(paste.value);
    if (!ticket) {
      joinError.hidden = false;
      joinError.textContent = 'That is not a Meshwork invite: it should start with mwj1_ or contain #/join/.';
      return;
    }
    location.hash = `#/join/${encodeURIComponent(ticket)}`;
  });

  const token = el('input', { id: 'token', type: 'password', autocomplete: 'off' });
  token.value = sessionStorage.getItem('meshwork.admin') ?? '';
  const sessionName = el('input', { id: 'session-name', type: 'text', value: 'Design review' });
  const sessions = el('select', { id: 'session', 'aria-label': 'Session' });
  const role = el('select', { id: 'role', 'aria-label': 'Role' });
  for (const r of ['editor', 'viewer', 'admin']) role.append(el('option', { value: r }, r));
  const out = el('div', { class: 'invites', 'aria-live': 'polite' });
  const adminError = el('p', { class: 'error', role: 'alert', hidden: '' });
  const fail = (e: unknown) => {
    adminError.hidden = false;
    adminError.textContent = (e as Error).message;
  };
  const load = async () => {
    sessionStorage.setItem('meshwork.admin', token.value.trim());
    const list = (await api('/api/v1/sessions', token.value.trim())) as { id: string; name: string }[];
    sessions.replaceChildren(...list.map((s) => el('option', { value: s.id }, `${s.name} (${s.id.slice(0, 8)})`)));
    adminError.hidden = true;
    await listInvites();
  };
  const loadBtn = el('button', { type: 'button' }, 'Load sessions');
  loadBtn.addEventListener('click', () => load().catch(fail));
  const create = el('button', { type: 'button' }, 'Create session');
  create.addEventListener('click', async () => {
    try {
      const s = (await api('/api/v1/sessions', token.value.trim(), { name: sessionName.value })) as { id: string };
      await load();
      sessions.value = s.id;
    } catch (e) {
      fail(e);
    }
  });
  const uses = el('input', { id: 'max-uses', type: 'number', min: '1', placeholder: 'any', 'aria-label': 'People it admits' });
  // The session's invites: uses, limit, and a way to revoke each.
  const inviteList = el('ul', { class: 'invite-list', 'aria-label': 'Invites' });
  const listInvites = async () => {
    if (!sessions.value) return;
    type Listed = { invite_id: string; role: string; uses: number; max_uses: number | null; revoked_at_ms: number | null; expires_at_ms: number };
    const invites = (await api(`/api/v1/sessions/${sessions.value}/invites`, token.value.trim())) as Listed[];
    inviteList.replaceChildren(
      ...invites.map((i) => {
        const limit = i.max_uses === null ? '' : ` of ${i.max_uses}`;
        const state = i.revoked_at_ms !== null ? 'revoked' : Date.now() > i.expires_at_ms ? 'expired' : 'active';
        const item = el('li', { 'data-invite': i.invite_id, 'data-state': state },
          `${i.role} · ${i.invite_id.slice(0, 8)} · used ${i.uses}${limit} · ${state} `);
        if (state === 'active') {
          const revoke = el('button', { type: 'button', class: 'link' }, 'Revoke');
          revoke.addEventListener('click', () => {
            api(`/api/v1/sessions/${sessions.value}/invites/${i.invite_id}`, token.value.trim(), undefined, 'DELETE')
              .then(listInvites)
              .catch(fail);
          });
          item.append(revoke);
        }
        return item;
      }),
    );
  };
  sessions.addEventListener('change', () => listInvites().catch(fail));
  const mint = el('button', { type: 'button' }, 'Create invite');
  mint.addEventListener('click', async () => {
    try {
      const maxUses = uses.value.trim() === '' ? undefined : Number(uses.value);
      const inv = (await api(`/api/v1/sessions/${sessions.value}/invites`, token.value.trim(), {
        role: role.value,
        max_uses: maxUses,
      })) as { ticket: string; role: string };
      const link = inviteLink(location.origin + location.pathname.replace(/\/$/, ''), inv.ticket);
      out.prepend(el('p', {}, `${inv.role} invite: `, el('a', { href: link, 'data-role': inv.role }, link)));
      await listInvites();
    } catch (e) {
      fail(e);
    }
  });
  const admin = el(
    'section',
    { 'aria-labelledby': 'admin-h' },
    el('h2', { id: 'admin-h' }, 'Admin'),
    el('p', {}, 'The admin token is printed once by the server on its first start.'),
    el('label', { for: 'token' }, 'Admin token'),
    token,
    loadBtn,
    el('label', { for: 'session-name' }, 'New session name'),
    sessionName,
    create,
    el('div', { class: 'row' }, sessions, role, uses, mint),
    adminError,
    out,
    inviteList,
  );
  into.replaceChildren(
    el(
      'div',
      { class: 'landing' },
      el('h1', {}, 'Meshwork'),
      el('p', {}, 'Collaborative mesh editing. Join with an invite, or create one as an admin.'),
      joinForm,
      admin,
    ),
  );
}
