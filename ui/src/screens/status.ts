// Status: the state, overall and per-file progress with speed and time
// left, and the quota bar. Updated in place from the event stream (fixed
// elements, tabular numbers): nothing moves as numbers change.

import type { App, Screen } from '../app';
import type { EngineEvent, Quota, Status } from '../api/types';
import { h, replace, setText } from '../dom';
import { formatBytes, formatEta, formatSpeed, percent, stateLabel } from '../logic/format';
import { SpeedMeter } from '../logic/speed';

/** How often the quota is read while something moves. */
const QUOTA_EVERY_MS = 1500;

export function statusScreen(app: App): Screen {
  const state = h('span', { id: 'sync-state', class: 'state', 'data-state': '' });
  const root = h('span', { class: 'muted', id: 'sync-root' });
  const pause = h('button', { type: 'button', id: 'pause-button' }, 'Pause');
  const overall = h('progress', { id: 'overall-progress', max: 100, value: 0, 'aria-label': 'Overall progress' });
  const bytes = h('span', { class: 'num', id: 'overall-bytes' }, '–');
  const files = h('span', { class: 'num', id: 'overall-files' }, '–');
  const speed = h('span', { class: 'num', id: 'overall-speed' }, '–');
  const eta = h('span', { class: 'num', id: 'overall-eta' }, '–');
  const current = h('ul', { class: 'file-progress', id: 'current-files', 'aria-live': 'off' });
  const quotaBar = h('progress', { id: 'quota-bar', max: 100, value: 0, 'aria-label': 'Storage used' });
  const quotaText = h('span', { class: 'num', id: 'quota-text' }, '–');
  const conflicts = h('p', { id: 'conflict-note', class: 'note', hidden: true });
  const problem = h('p', { id: 'last-error', class: 'error-text', hidden: true });
  const meter = new SpeedMeter();
  let quotaTimer: number | undefined;
  let quotaSoon: number | undefined;
  let lastQuota = 0;
  let lastState = '';

  const el = h(
    'section',
    { 'aria-labelledby': 'status-title' },
    h('h1', { id: 'status-title' }, 'Status'),
    h('div', { class: 'card state-row' }, h('div', {}, state, h('br'), root), pause),
    h(
      'div',
      { class: 'card' },
      h('h2', {}, 'Transfers'),
      overall,
      h(
        'dl',
        { class: 'figures' },
        h('div', {}, h('dt', {}, 'Done'), h('dd', {}, bytes)),
        h('div', {}, h('dt', {}, 'Files'), h('dd', {}, files)),
        h('div', {}, h('dt', {}, 'Speed'), h('dd', {}, speed)),
        h('div', {}, h('dt', {}, 'Time left'), h('dd', {}, eta)),
      ),
      h('h3', {}, 'Now'),
      current,
    ),
    h('div', { class: 'card' }, h('h2', {}, 'Storage'), quotaBar, h('p', {}, quotaText)),
    conflicts,
    problem,
  );

  pause.addEventListener('click', async () => {
    const paused = app.status?.state === 'paused';
    try {
      await app.api.updateSettings({ paused: !paused });
      app.status = (await app.api.status()) as Status;
      render(app.status);
    } catch (e) {
      app.notify(String((e as Error).message));
    }
  });

  async function refreshQuota(): Promise<void> {
    lastQuota = Date.now();
    try {
      showQuota(await app.api.quota());
    } catch (e) {
      setText(quotaText, `unavailable (${(e as Error).message})`);
    }
  }

  /** A quota read soon, at most one every half second, never dropped: the
   * last change of a burst is always read. */
  function scheduleQuota(): void {
    if (quotaSoon !== undefined) return;
    const wait = Math.max(0, 500 - (Date.now() - lastQuota));
    quotaSoon = window.setTimeout(() => {
      quotaSoon = undefined;
      void refreshQuota();
    }, wait);
  }

  function showQuota(q: Quota): void {
    quotaBar.value = percent(q.used, q.limit);
    quotaBar.setAttribute('data-used', String(q.used));
    setText(quotaText, `${formatBytes(q.used)} of ${formatBytes(q.limit)} used`);
  }

  function render(s: Status): void {
    if (lastState === 'syncing' && s.state !== 'syncing') scheduleQuota();
    lastState = s.state;
    setText(state, stateLabel(s.state));
    state.setAttribute('data-state', s.state);
    setText(root, s.root);
    setText(pause, s.state === 'paused' ? 'Resume' : 'Pause');
    const moving = s.state === 'syncing' && s.bytes_total > 0;
    if (moving) meter.add(Date.now(), s.bytes_done);
    else meter.reset();
    overall.value = moving ? percent(s.bytes_done, s.bytes_total) : s.state === 'up_to_date' ? 100 : 0;
    setText(bytes, moving ? `${formatBytes(s.bytes_done)} of ${formatBytes(s.bytes_total)}` : '–');
    setText(files, s.files_total ? `${s.files_done} of ${s.files_total}` : '–');
    setText(speed, moving ? formatSpeed(meter.rate()) : '–');
    setText(eta, moving ? formatEta(meter.eta(s.bytes_total)) : '–');
    renderCurrent(s);
    conflicts.hidden = s.conflicts === 0;
    if (s.conflicts) {
      replace(
        conflicts,
        `${s.conflicts} conflict${s.conflicts === 1 ? '' : 's'} to resolve. `,
        h('a', { href: '#conflicts' }, 'Resolve…'),
      );
    }
    problem.hidden = !s.last_error;
    setText(problem, s.last_error ?? '');
  }

  /** One row per file in flight; rows are reused while the file stays. */
  function renderCurrent(s: Status): void {
    const keep = new Set(s.current.map((c) => c.path));
    for (const li of Array.from(current.children) as HTMLElement[]) {
      if (!keep.has(li.dataset.path ?? '')) li.remove();
    }
    for (const c of s.current) {
      let li = Array.from(current.children).find((x) => (x as HTMLElement).dataset.path === c.path) as
        | HTMLLIElement
        | undefined;
      if (!li) {
        li = h(
          'li',
          {},
          h('span', { class: 'file-name' }),
          h('progress', { max: 100, value: 0, class: 'file-bar' }),
          h('span', { class: 'num file-bytes' }),
        );
        li.dataset.path = c.path;
        const name = li.querySelector('.file-name') as HTMLElement;
        name.textContent = c.path;
        (li.querySelector('progress') as HTMLProgressElement).setAttribute('aria-label', `Progress of ${c.path}`);
        current.append(li);
      }
      const bar = li.querySelector('progress') as HTMLProgressElement;
      if (c.bytes_total > 0) bar.value = percent(c.bytes_done, c.bytes_total);
      else bar.removeAttribute('value');
      setText(
        li.querySelector('.file-bytes') as HTMLElement,
        c.bytes_total > 0 ? `${formatBytes(c.bytes_done)} of ${formatBytes(c.bytes_total)}` : '',
      );
    }
    if (s.current.length === 0 && !current.querySelector('.idle')) {
      current.append(h('li', { class: 'idle muted' }, 'Nothing in flight.'));
    } else if (s.current.length > 0) {
      current.querySelector('.idle')?.remove();
    }
  }

  if (app.status) render(app.status);
  void refreshQuota();
  quotaTimer = window.setInterval(() => {
    if (app.status?.state === 'syncing') void refreshQuota();
  }, QUOTA_EVERY_MS);

  return {
    el,
    onEvent(e: EngineEvent) {
      if (e.type === 'status') render(e);
      else scheduleQuota();
    },
    close() {
      window.clearInterval(quotaTimer);
      window.clearTimeout(quotaSoon);
    },
  };
}
