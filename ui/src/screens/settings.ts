// Settings: device name, bandwidth limits, pause, start at login, and the
// folders not synced here.

import type { App, Screen } from '../app';
import type { Settings } from '../api/types';
import { h, replace } from '../dom';

export function settingsScreen(app: App): Screen {
  const name = h('input', { id: 'set-device-name', type: 'text', maxlength: 64, required: true, autocomplete: 'off' });
  const up = h('input', { id: 'set-upload', type: 'number', min: 0, step: 1, inputmode: 'numeric' });
  const down = h('input', { id: 'set-download', type: 'number', min: 0, step: 1, inputmode: 'numeric' });
  const paused = h('input', { id: 'set-paused', type: 'checkbox' });
  const login = h('input', { id: 'set-login', type: 'checkbox' });
  const serve = h('input', { id: 'set-serve-ui', type: 'checkbox' });
  const excluded = h('ul', { id: 'set-excluded', class: 'plain' });
  const saved = h('span', { role: 'status', class: 'muted', id: 'settings-saved' });
  const form = h(
    'form',
    { class: 'card settings', id: 'settings-form' },
    h('label', { for: 'set-device-name' }, 'Device name'),
    name,
    h('p', { class: 'hint' }, 'Shown in conflicted copies and version history. Used from the next start of Coffer.'),
    h('label', { for: 'set-upload' }, 'Upload limit (KB/s, 0 for none)'),
    up,
    h('label', { for: 'set-download' }, 'Download limit (KB/s, 0 for none)'),
    down,
    h('div', { class: 'check' }, paused, h('label', { for: 'set-paused' }, 'Pause syncing')),
    h('div', { class: 'check' }, login, h('label', { for: 'set-login' }, 'Start Coffer when I log in (desktop app)')),
    h('div', { class: 'check' }, serve, h('label', { for: 'set-serve-ui' }, 'Serve this web UI whenever Coffer syncs (on this computer only)')),
    h('div', { class: 'dialog-buttons' }, h('button', { type: 'submit', class: 'primary', id: 'settings-save' }, 'Save'), saved),
  );
  const el = h(
    'section',
    { 'aria-labelledby': 'settings-title' },
    h('h1', { id: 'settings-title' }, 'Settings'),
    form,
    h('div', { class: 'card' }, h('h2', {}, 'Folders not on this device'), excluded, h('a', { href: '#selective' }, 'Choose folders…')),
  );

  function show(s: Settings): void {
    name.value = s.device_name;
    up.value = String(s.upload_limit_kib);
    down.value = String(s.download_limit_kib);
    paused.checked = s.paused;
    login.checked = s.start_at_login;
    serve.checked = s.serve_ui;
    replace(excluded, s.excluded.length ? s.excluded.map((p) => h('li', { class: 'file-name' }, p)) : h('li', { class: 'muted' }, 'None: every folder syncs here.'));
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const kib = (i: HTMLInputElement) => Math.max(0, Math.floor(Number(i.value) || 0));
    try {
      show(
        await app.api.updateSettings({
          device_name: name.value.trim(),
          upload_limit_kib: kib(up),
          download_limit_kib: kib(down),
          paused: paused.checked,
          start_at_login: login.checked,
          serve_ui: serve.checked,
        }),
      );
      saved.textContent = 'Saved.';
    } catch (e) {
      app.notify((e as Error).message);
    }
  });

  app.api.settings().then(show).catch((e) => app.notify((e as Error).message));
  return { el };
}
