// Version history: browse the files in your Coffer, list a file's kept
// versions, and restore one.

import { ask, type App, type Screen } from '../app';
import type { TreeEntry } from '../api/types';
import { h, replace } from '../dom';
import { formatBytes, formatTime } from '../logic/format';

export function versionsScreen(app: App): Screen {
  const crumbs = h('nav', { 'aria-label': 'Folder', class: 'crumbs', id: 'version-crumbs' });
  const files = h('ul', { id: 'version-files', class: 'plain listing' });
  const detail = h('div', { id: 'version-detail', class: 'card', hidden: true });
  const el = h(
    'section',
    { 'aria-labelledby': 'versions-title' },
    h('h1', { id: 'versions-title' }, 'Version history'),
    h('div', { class: 'split' }, h('div', {}, crumbs, files), detail),
  );

  async function browse(path: string): Promise<void> {
    try {
      const f = await app.api.folder(path);
      const parts = path ? path.split('/') : [];
      replace(
        crumbs,
        h('button', { type: 'button', class: 'link', onclick: () => void browse('') }, 'Coffer'),
        parts.flatMap((p, i) => [
          ' / ',
          h('button', { type: 'button', class: 'link', onclick: () => void browse(parts.slice(0, i + 1).join('/')) }, p),
        ]),
      );
      replace(files, f.entries.length ? f.entries.map(entry) : h('li', { class: 'muted' }, 'Empty.'));
    } catch (e) {
      app.notify((e as Error).message);
    }
  }

  function entry(e: TreeEntry): HTMLElement {
    const open = () => void (e.kind === 'folder' ? browse(e.path) : show(e.path));
    return h(
      'li',
      {},
      h(
        'button',
        { type: 'button', class: `entry ${e.kind}`, 'data-path': e.path, onclick: open },
        h('span', { class: 'kind muted' }, e.kind === 'folder' ? 'Folder' : 'File'),
        h('span', { class: 'file-name' }, e.kind === 'folder' ? `${e.name}/` : e.name),
        h('span', { class: 'num muted' }, formatBytes(e.size)),
      ),
    );
  }

  async function show(path: string): Promise<void> {
    detail.hidden = false;
    replace(detail, h('h2', {}, 'Versions of ', h('span', { class: 'file-name' }, path)), h('p', { class: 'muted' }, 'Loading…'));
    try {
      const v = await app.api.versions(path);
      const rows = v.items.map((x) =>
        h(
          'tr',
          { 'data-revision': x.revision },
          h('td', { class: 'num' }, String(x.revision)),
          h('td', {}, formatTime(x.time_ms)),
          h('td', {}, x.device),
          h('td', { class: 'num' }, x.deleted ? 'deleted' : formatBytes(x.size)),
          h(
            'td',
            {},
            x.current
              ? h('span', { class: 'badge' }, 'Current')
              : x.deleted
                ? ''
                : h('button', { type: 'button', class: 'restore', onclick: () => void restore(path, x.revision, x.time_ms) }, 'Restore'),
          ),
        ),
      );
      replace(
        detail,
        h('h2', {}, 'Versions of ', h('span', { class: 'file-name' }, path)),
        h(
          'table',
          { id: 'version-table' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Rev.'), h('th', { scope: 'col' }, 'Saved'), h('th', { scope: 'col' }, 'Device'), h('th', { scope: 'col' }, 'Size'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Action')))),
          h('tbody', {}, rows),
        ),
      );
    } catch (e) {
      app.notify((e as Error).message);
    }
  }

  async function restore(path: string, revision: number, time: number): Promise<void> {
    const ok = await ask('Restore this version?', `“${path}” will be replaced by the version saved ${formatTime(time)}, on every device. The current version stays in the history.`, [
      { label: 'Restore', value: 'yes', primary: true, id: 'confirm-restore' },
      { label: 'Cancel', value: '' },
    ]);
    if (ok !== 'yes') return;
    try {
      const r = await app.api.restore(path, revision);
      app.notify(`Restored ${path} (now revision ${r.revision}).`, 'info');
      await show(path);
    } catch (e) {
      app.notify((e as Error).message);
    }
  }

  void browse('');
  return { el };
}
