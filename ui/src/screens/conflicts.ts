// Conflicts: each unresolved one, and a dialog with both versions side by
// side (size, modified time, device) to keep mine, theirs or both, or to
// open either.

import { ask, type App, type Screen } from '../app';
import type { Conflict, ConflictSide, EngineEvent, Keep } from '../api/types';
import { h, replace } from '../dom';
import { formatBytes, formatTime } from '../logic/format';

export function conflictsScreen(app: App): Screen {
  const list = h('ul', { id: 'conflict-list', class: 'plain' });
  const el = h(
    'section',
    { 'aria-labelledby': 'conflicts-title' },
    h('h1', { id: 'conflicts-title' }, 'Conflicts'),
    h('p', { class: 'muted' }, 'The same file was changed on two devices. Nothing was lost: both versions are here.'),
    list,
  );
  let lastCount = -1;

  function side(title: string, s: ConflictSide, cls: string): HTMLElement {
    const url = app.api.transport.fileUrl(s.path);
    return h(
      'div',
      { class: `side ${cls}` },
      h('h3', {}, title),
      h(
        'dl',
        {},
        h('dt', {}, 'File'), h('dd', { class: 'file-name' }, s.path),
        h('dt', {}, 'Size'), h('dd', { class: 'num side-size' }, s.size === null ? 'missing' : formatBytes(s.size)),
        h('dt', {}, 'Modified'), h('dd', { class: 'side-time' }, formatTime(s.modified_ms)),
        h('dt', {}, 'Device'), h('dd', { class: 'side-device' }, s.device),
      ),
      url && s.size !== null ? h('a', { href: url, class: 'button', download: '' }, 'Open') : null,
    );
  }

  async function open(c: Conflict): Promise<void> {
    const body = h(
      'div',
      { class: 'sides', id: 'conflict-sides' },
      side('Mine (this device)', c.mine, 'mine'),
      side('Theirs', c.theirs, 'theirs'),
    );
    const keep = (await ask(`Conflict: ${c.path}`, body, [
      { label: 'Keep mine', value: 'mine', id: 'keep-mine' },
      { label: 'Keep theirs', value: 'theirs', id: 'keep-theirs' },
      { label: 'Keep both', value: 'both', id: 'keep-both', primary: true },
      { label: 'Cancel', value: '' },
    ])) as Keep | '';
    if (!keep) return;
    try {
      await app.api.resolve(c.path, keep);
      app.notify(`Resolved ${c.path}.`, 'info');
    } catch (e) {
      app.notify((e as Error).message);
    }
    await load();
  }

  async function load(): Promise<void> {
    try {
      const r = await app.api.conflicts();
      lastCount = r.items.length;
      replace(
        list,
        r.items.length
          ? r.items.map((c) =>
              h(
                'li',
                { class: 'card conflict-item' },
                h('span', { class: 'file-name' }, c.path),
                h('span', { class: 'muted' }, ` found ${formatTime(c.created_ms)} `),
                h('button', { type: 'button', class: 'resolve', onclick: () => void open(c) }, 'Resolve…'),
              ),
            )
          : h('li', { class: 'muted', id: 'no-conflicts' }, 'No conflicts.'),
      );
    } catch (e) {
      app.notify((e as Error).message);
    }
  }
  void load();

  return {
    el,
    onEvent(e: EngineEvent) {
      if (e.type === 'status' && e.conflicts !== lastCount) void load();
    },
  };
}
