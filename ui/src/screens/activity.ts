// Activity: what was uploaded, downloaded, deleted or conflicted lately,
// newest first, live.

import type { App, Screen } from '../app';
import type { Activity, EngineEvent } from '../api/types';
import { h, replace } from '../dom';
import { activityLabel, formatBytes, formatTime } from '../logic/format';

const SHOWN = 200;

export function activityScreen(app: App): Screen {
  const list = h('ol', { id: 'activity-list', class: 'activity' });
  const el = h('section', { 'aria-labelledby': 'activity-title' }, h('h1', { id: 'activity-title' }, 'Activity'), list);

  const row = (a: Activity) =>
    h(
      'li',
      { 'data-kind': a.kind },
      h('span', { class: `badge kind-${a.kind}` }, activityLabel(a.kind)),
      h('span', { class: 'file-name' }, a.path),
      h('span', { class: 'num muted' }, a.bytes ? formatBytes(a.bytes) : ''),
      h('time', { class: 'muted', datetime: new Date(a.time_ms).toISOString() }, formatTime(a.time_ms)),
    );

  app.api
    .activity()
    .then((r) => {
      replace(list, r.items.length ? r.items.map(row) : h('li', { class: 'muted empty' }, 'Nothing yet.'));
    })
    .catch((e) => app.notify((e as Error).message));

  return {
    el,
    onEvent(e: EngineEvent) {
      if (e.type !== 'activity') return;
      list.querySelector('.empty')?.remove();
      list.prepend(row(e));
      while (list.children.length > SHOWN) list.lastElementChild?.remove();
    },
  };
}
