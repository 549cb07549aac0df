// The UI's shell: navigation between screens (the URL's hash names the
// screen), the event stream, and the notice area.

import './style.css';
import { Api, ApiError, connect } from './api/client';
import type { EngineEvent, Status } from './api/types';
import type { App, Screen } from './app';
import { h, setText } from './dom';
import { stateLabel } from './logic/format';
import { accountScreen } from './screens/account';
import { activityScreen } from './screens/activity';
import { conflictsScreen } from './screens/conflicts';
import { selectiveScreen } from './screens/selective';
import { runSetup } from './screens/setup';
import { settingsScreen } from './screens/settings';
import { statusScreen } from './screens/status';
import { versionsScreen } from './screens/versions';

const SCREENS: Record<string, { title: string; make: (app: App) => Screen }> = {
  status: { title: 'Status', make: statusScreen },
  activity: { title: 'Activity', make: activityScreen },
  conflicts: { title: 'Conflicts', make: conflictsScreen },
  selective: { title: 'Selective sync', make: selectiveScreen },
  versions: { title: 'Version history', make: versionsScreen },
  settings: { title: 'Settings', make: settingsScreen },
  account: { title: 'Account', make: accountScreen },
};

const api = new Api(connect());
const notice = h('div', { id: 'notice', role: 'status', 'aria-live': 'polite', hidden: true });
const link = h('span', { id: 'link-state', class: 'muted' });
const badge = h('span', { id: 'conflict-badge', class: 'count', hidden: true });
const headerState = h('span', { id: 'header-state', class: 'state' });
const main = h('main', { id: 'main', tabindex: -1 });
const nav = h(
  'nav',
  { 'aria-label': 'Screens' },
  h(
    'ul',
    {},
    Object.entries(SCREENS).map(([id, s]) =>
      h('li', {}, h('a', { href: `#${id}`, id: `nav-${id}` }, s.title, id === 'conflicts' ? badge : null)),
    ),
  ),
);

let current: Screen | null = null;

const app: App = {
  api,
  status: null,
  notify(message, kind = 'error') {
    notice.hidden = message === null;
    notice.className = kind;
    setText(notice, message ?? '');
  },
  go(name) {
    location.hash = `#${name}`;
  },
};

function show(): void {
  const name = location.hash.slice(1) in SCREENS ? location.hash.slice(1) : 'status';
  current?.close?.();
  app.notify(null);
  current = SCREENS[name].make(app);
  main.replaceChildren(current.el);
  document.title = `${SCREENS[name].title} – Coffer`;
  for (const a of nav.querySelectorAll('a')) {
    if (a.id === `nav-${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function onStatus(s: Status): void {
  app.status = s;
  setText(headerState, stateLabel(s.state));
  headerState.setAttribute('data-state', s.state);
  badge.hidden = s.conflicts === 0;
  setText(badge, String(s.conflicts));
}

function onEvent(e: EngineEvent): void {
  if (e.type === 'status') onStatus(e);
  current?.onEvent?.(e);
}

async function start(): Promise<void> {
  // The desktop app answers for its first run; a browser never needs one
  // (`coffer up` and `coffer sync` start set up).
  if (api.transport.kind === 'tauri') {
    const root = document.getElementById('app');
    try {
      const setup = await api.setup({ type: 'get_setup' });
      if (setup.step !== 'done' && root) {
        runSetup(api, root, setup, () => void startApp());
        return;
      }
    } catch (e) {
      app.notify((e as Error).message);
    }
  }
  await startApp();
}

async function startApp(): Promise<void> {
  document.getElementById('app')?.replaceChildren(
    h('a', { href: '#main', class: 'skip' }, 'Skip to content'),
    h('header', {}, h('span', { class: 'brand' }, 'Coffer'), headerState, link),
    h('div', { class: 'layout' }, nav, h('div', { class: 'content' }, notice, main)),
  );
  try {
    onStatus(await api.status());
  } catch (e) {
    if (e instanceof ApiError && e.code === 'unauthorized') {
      main.replaceChildren(
        h('section', { id: 'signed-out' }, h('h1', {}, 'Not signed in'), h('p', {}, 'Run ', h('code', {}, 'coffer ui'), ' and open the link it prints.')),
      );
      return;
    }
    app.notify((e as Error).message);
  }
  api.transport.subscribe(onEvent, (up) => setText(link, up ? '' : 'Reconnecting…'));
  window.addEventListener('hashchange', show);
  show();
}

void start();
