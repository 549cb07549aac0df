// The desktop app's first run: choose the store, sign up or log in, save
// the recovery key, choose the folder, choose what to sync. Each step asks
// the shell (src-tauri/src/core.rs), which keeps the progress, so a restart
// resumes where the person left off.

import { ApiError, type Api } from '../api/client';
import type { Setup } from '../api/types';
import type { App } from '../app';
import { h, replace, setText } from '../dom';
import { selectiveScreen } from './selective';

/** Runs the first run in `root`; calls `done` once syncing has started. */
export function runSetup(api: Api, root: HTMLElement, first: Setup, done: () => void): void {
  const error = h('p', { id: 'setup-error', role: 'alert', class: 'error', hidden: true });
  const body = h('div', { class: 'setup-body' });
  const progress = h('ol', { class: 'setup-steps', 'aria-label': 'Steps' });
  const steps: [Setup['step'], string][] = [
    ['store', 'Store'],
    ['account', 'Account'],
    ['recovery', 'Recovery key'],
    ['folder', 'Folder'],
    ['choose', 'What to sync'],
  ];
  root.replaceChildren(
    h('header', {}, h('span', { class: 'brand' }, 'Coffer')),
    h('main', { id: 'setup', class: 'setup' }, progress, error, body),
  );

  function fail(message: string | null): void {
    error.hidden = message === null;
    setText(error, message ?? '');
  }

  /** Sends a step; shows its error, or the next step. */
  async function send(req: Parameters<Api['setup']>[0], button?: HTMLButtonElement): Promise<void> {
    fail(null);
    if (button) button.disabled = true;
    try {
      show(await api.setup(req));
    } catch (e) {
      fail(e instanceof ApiError || e instanceof Error ? e.message : String(e));
    } finally {
      if (button) button.disabled = false;
    }
  }

  function show(s: Setup): void {
    if (s.step === 'done') {
      done();
      return;
    }
    replace(
      progress,
      steps.map(([id, label]) =>
        h('li', { 'aria-current': id === s.step ? 'step' : null, class: id === s.step ? 'current' : null }, label),
      ),
    );
    body.setAttribute('data-step', s.step);
    const screen = { store, account, recovery, folder, choose }[s.step](s);
    body.replaceChildren(screen);
    screen.querySelector<HTMLElement>('input:not([type=radio]), button.primary')?.focus();
  }

  function store(): HTMLElement {
    const local = h('input', { type: 'radio', name: 'store', id: 'store-local', value: 'local', checked: true });
    const server = h('input', { type: 'radio', name: 'store', id: 'store-server', value: 'server' });
    const url = h('input', { type: 'url', id: 'server-url', placeholder: 'https://coffer.example.com', autocomplete: 'url' });
    const next = h('button', { type: 'submit', id: 'store-next', class: 'primary' }, 'Continue');
    const form = h(
      'form',
      { class: 'card' },
      h('h1', {}, 'Welcome to Coffer'),
      h('p', { class: 'muted' }, 'Your files are encrypted on this device. The store only ever sees ciphertext.'),
      h('fieldset', {},
        h('legend', {}, 'Where should your files be stored?'),
        h('div', { class: 'choice' }, local, h('label', { for: 'store-local' }, h('strong', {}, 'On this computer'), h('span', { class: 'hint' }, ' A store kept next to your files. Nothing to set up.'))),
        h('div', { class: 'choice' }, server, h('label', { for: 'store-server' }, h('strong', {}, 'On a Coffer server'), h('span', { class: 'hint' }, ' Sync between your devices.'))),
        h('label', { for: 'server-url', class: 'field' }, 'Server address', url),
      ),
      next,
    );
    const sync = () => (url.disabled = !server.checked);
    local.addEventListener('change', sync);
    server.addEventListener('change', sync);
    url.addEventListener('input', () => (server.checked = true));
    sync();
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (server.checked) {
        if (!url.value.trim()) return fail('Enter the server’s address.');
        void send({ type: 'use_server', url: url.value }, next);
      } else void send({ type: 'use_local_store' }, next);
    });
    return form;
  }

  function account(s: Setup): HTMLElement {
    let mode: 'signup' | 'login' = 'signup';
    const email = h('input', { type: 'email', id: 'email', autocomplete: 'username', required: true });
    const pw = h('input', { type: 'password', id: 'password', autocomplete: 'new-password', required: true });
    const pw2 = h('input', { type: 'password', id: 'password2', autocomplete: 'new-password' });
    const pw2Field = h('label', { for: 'password2', class: 'field' }, 'Repeat the password', pw2);
    const title = h('h1', {}, '');
    const submit = h('button', { type: 'submit', id: 'account-next', class: 'primary' }, '');
    const switcher = h('button', { type: 'button', id: 'account-switch', class: 'link' }, '');
    const render = () => {
      setText(title, mode === 'signup' ? 'Create your account' : 'Log in');
      setText(submit, mode === 'signup' ? 'Create account' : 'Log in');
      setText(switcher, mode === 'signup' ? 'I already have an account' : 'Create a new account');
      pw.setAttribute('autocomplete', mode === 'signup' ? 'new-password' : 'current-password');
      pw2Field.hidden = mode !== 'signup';
    };
    switcher.addEventListener('click', () => {
      mode = mode === 'signup' ? 'login' : 'signup';
      fail(null);
      render();
    });
    render();
    const form = h(
      'form',
      { class: 'card' },
      title,
      h('p', { class: 'muted' }, 'On ', h('code', {}, s.store_url ?? ''), '. Your password never leaves this device.'),
      h('label', { for: 'email', class: 'field' }, 'Email', email),
      h('label', { for: 'password', class: 'field' }, 'Password', pw),
      pw2Field,
      h('div', { class: 'row' }, submit, switcher),
      h('button', { type: 'button', id: 'change-store', class: 'link', onclick: () => void send({ type: 'change_store' }) }, 'Use another store'),
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (mode === 'signup' && pw.value !== pw2.value) return fail('The passwords do not match.');
      if (mode === 'signup' && pw.value.length < 8) return fail('Choose a password of at least 8 characters.');
      void send({ type: mode, email: email.value, password: pw.value }, submit);
    });
    return form;
  }

  function recovery(s: Setup): HTMLElement {
    const saved = h('input', { type: 'checkbox', id: 'recovery-saved' });
    const next = h('button', { type: 'button', id: 'recovery-next', class: 'primary', disabled: true }, 'Continue');
    saved.addEventListener('change', () => (next.disabled = !saved.checked));
    next.addEventListener('click', () => void send({ type: 'confirm_recovery_key' }, next));
    return h(
      'section',
      { class: 'card' },
      h('h1', {}, 'Save your recovery key'),
      h('p', {}, 'If you forget your password, this key is the only way to your files. Nobody else can reset it, not even the store. Write it down or keep it in a password manager.'),
      h('p', { class: 'recovery' }, h('code', { id: 'recovery-key' }, s.recovery_key ?? '')),
      h('div', { class: 'choice' }, saved, h('label', { for: 'recovery-saved' }, 'I have saved my recovery key somewhere safe')),
      next,
    );
  }

  function folder(s: Setup): HTMLElement {
    const path = h('input', { type: 'text', id: 'folder', value: s.folder, spellcheck: false });
    const next = h('button', { type: 'submit', id: 'folder-next', class: 'primary' }, 'Continue');
    const form = h(
      'form',
      { class: 'card' },
      h('h1', {}, 'Choose your Coffer folder'),
      h('p', { class: 'muted' }, 'Files in this folder are kept in sync. It is created if it does not exist; files already in it are added.'),
      h('label', { for: 'folder', class: 'field' }, 'Folder', path),
      next,
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      void send({ type: 'choose_folder', path: path.value }, next);
    });
    return form;
  }

  function choose(s: Setup): HTMLElement {
    const app: App = {
      api,
      status: null,
      notify: (m) => fail(m),
      go: () => {},
    };
    const tree = selectiveScreen(app).el;
    const finish = h('button', { type: 'button', id: 'finish-setup', class: 'primary' }, 'Start syncing');
    finish.addEventListener('click', () => void send({ type: 'finish_setup' }, finish));
    return h(
      'section',
      { class: 'card' },
      h('p', { class: 'muted' }, 'Syncing into ', h('code', { id: 'chosen-folder' }, s.folder), '. Folders already in your Coffer are listed below; new ones always sync.'),
      tree,
      finish,
    );
  }

  show(first);
}
