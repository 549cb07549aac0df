// Account: who is logged in, the devices with a session, and logging out.

import { ask, type App, type Screen } from '../app';
import type { Account } from '../api/types';
import { h, replace } from '../dom';
import { formatTime } from '../logic/format';

export function accountScreen(app: App): Screen {
  const body = h('div', { id: 'account-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const el = h('section', { 'aria-labelledby': 'account-title' }, h('h1', { id: 'account-title' }, 'Account'), body);

  function show(a: Account): void {
    replace(
      body,
      h(
        'div',
        { class: 'card' },
        h('dl', { class: 'pairs' },
          h('dt', {}, 'Email'), h('dd', { id: 'account-email' }, a.email),
          h('dt', {}, 'Server'), h('dd', {}, a.server),
          h('dt', {}, 'This device'), h('dd', {}, `${a.device_name} (${a.device_id})`),
        ),
      ),
      h(
        'div',
        { class: 'card' },
        h('h2', {}, 'Devices signed in'),
        h(
          'table',
          { id: 'session-table' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Device'), h('th', { scope: 'col' }, 'Since'), h('th', { scope: 'col' }, 'Until'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Action')))),
          h(
            'tbody',
            {},
            a.sessions.map((s) =>
              h(
                'tr',
                {},
                h('td', {}, s.current ? `${a.device_name} (this device)` : s.device_id),
                h('td', {}, formatTime(s.created_ms)),
                h('td', {}, formatTime(s.expires_ms)),
                h('td', {}, s.current ? '' : h('button', { type: 'button', onclick: () => void revoke(s.id) }, 'Sign out')),
              ),
            ),
          ),
        ),
      ),
      h('button', { type: 'button', id: 'logout', class: 'danger', onclick: () => void logout() }, 'Log out of this device'),
    );
  }

  async function load(): Promise<void> {
    try {
      show(await app.api.account());
    } catch (e) {
      app.notify((e as Error).message);
    }
  }

  async function revoke(id: string): Promise<void> {
    if ((await ask('Sign that device out?', 'It stops syncing until it logs in again.', [{ label: 'Sign out', value: 'yes', primary: true }, { label: 'Cancel', value: '' }])) !== 'yes') return;
    try {
      await app.api.revokeSession(id);
    } catch (e) {
      app.notify((e as Error).message);
    }
    await load();
  }

  async function logout(): Promise<void> {
    if ((await ask('Log out of this device?', 'Syncing stops and this device forgets its keys. Your files stay in the folder and in your Coffer.', [{ label: 'Log out', value: 'yes', primary: true }, { label: 'Cancel', value: '' }])) !== 'yes') return;
    try {
      await app.api.logout();
      app.notify('Logged out.', 'info');
      // The desktop app goes back to its first run (sign in again).
      if (app.api.transport.kind === 'tauri') location.reload();
    } catch (e) {
      app.notify((e as Error).message);
    }
  }

  void load();
  return { el };
}
