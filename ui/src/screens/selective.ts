// Selective sync: the store's folder tree, loaded a level at a time, with
// tri-state checkboxes and sizes. Unchecking a folder removes its local
// copy, so it asks first.

import { ask, type App, type Screen } from '../app';
import { h, replace } from '../dom';
import { formatBytes } from '../logic/format';
import { checkOf, find, nodesOf, toggleIntent, uncheckWarning, type TreeNode } from '../logic/tree';

export function selectiveScreen(app: App): Screen {
  const tree = h('ul', { id: 'folder-tree', class: 'tree', role: 'tree', 'aria-label': 'Folders in your Coffer' });
  const el = h(
    'section',
    { 'aria-labelledby': 'selective-title' },
    h('h1', { id: 'selective-title' }, 'Selective sync'),
    h('p', { class: 'muted' }, 'Choose the folders kept on this device. Unchecked folders stay in your Coffer and on other devices.'),
    tree,
  );
  let roots: TreeNode[] = [];

  async function loadLevel(path: string): Promise<TreeNode[]> {
    const f = await app.api.folder(path);
    return nodesOf(f.entries);
  }

  function item(n: TreeNode, depth: number): HTMLElement {
    const box = h('input', {
      type: 'checkbox',
      id: `sel-${n.path}`,
      'data-path': n.path,
      'aria-checked': checkOf(n.sync) === 'mixed' ? 'mixed' : String(checkOf(n.sync) === 'checked'),
    });
    box.checked = checkOf(n.sync) === 'checked';
    box.indeterminate = checkOf(n.sync) === 'mixed';
    box.addEventListener('change', () => void toggle(n, box));
    const expander = n.hasFolders
      ? h(
          'button',
          {
            type: 'button',
            class: 'expander',
            'aria-expanded': String(n.expanded),
            'aria-label': `${n.expanded ? 'Collapse' : 'Expand'} ${n.name}`,
          },
          n.expanded ? '▾' : '▸',
        )
      : h('span', { class: 'expander-space', 'aria-hidden': 'true' });
    if (n.hasFolders) expander.addEventListener('click', () => void expand(n));
    const label = h('label', { for: `sel-${n.path}` }, h('span', { class: 'file-name' }, n.name));
    const li = h(
      'li',
      { role: 'treeitem', 'aria-level': depth + 1, 'aria-expanded': n.hasFolders ? String(n.expanded) : null, 'data-path': n.path },
      h(
        'div',
        { class: 'tree-row' },
        expander,
        box,
        label,
        h('span', { class: 'num muted size' }, formatBytes(n.size)),
        h('span', { class: 'num muted' }, `${n.files} file${n.files === 1 ? '' : 's'}`),
      ),
    );
    if (n.expanded && n.children) {
      li.append(h('ul', { role: 'group' }, n.children.map((c) => item(c, depth + 1))));
    }
    return li;
  }

  function render(): void {
    replace(tree, roots.length ? roots.map((n) => item(n, 0)) : h('li', { class: 'muted' }, 'No folders yet.'));
  }

  async function expand(n: TreeNode): Promise<void> {
    const node = find(roots, n.path);
    if (!node) return;
    try {
      if (!node.children) node.children = await loadLevel(node.path);
      node.expanded = !node.expanded;
      render();
      document.querySelector<HTMLElement>(`li[data-path="${CSS.escape(n.path)}"] .expander`)?.focus();
    } catch (e) {
      app.notify((e as Error).message);
    }
  }

  async function toggle(n: TreeNode, box: HTMLInputElement): Promise<void> {
    const { include } = toggleIntent(n);
    if (!include) {
      const warning = uncheckWarning(n, formatBytes);
      if (warning) {
        const ok = await ask('Remove the local copy?', warning, [
          { label: 'Remove from this device', value: 'yes', id: 'confirm-uncheck', primary: true },
          { label: 'Cancel', value: '', id: 'cancel-uncheck' },
        ]);
        if (ok !== 'yes') {
          box.checked = true;
          box.indeterminate = checkOf(n.sync) === 'mixed';
          return;
        }
      }
    }
    box.disabled = true;
    try {
      const r = await app.api.setFolderSync(n.path, include);
      app.notify(
        include ? `${n.name} will sync to this device.` : `${n.name} is no longer on this device (${r.removed} items removed).`,
        'info',
      );
    } catch (e) {
      app.notify((e as Error).message);
    }
    await reload();
  }

  /** Reloads every open level, keeping what was expanded. */
  async function reload(): Promise<void> {
    const open = new Set<string>();
    const walk = (l: TreeNode[]) => l.forEach((n) => { if (n.expanded) open.add(n.path); if (n.children) walk(n.children); });
    walk(roots);
    const load = async (path: string): Promise<TreeNode[]> => {
      const level = await loadLevel(path);
      for (const n of level) {
        if (open.has(n.path)) {
          n.children = await load(n.path);
          n.expanded = true;
        }
      }
      return level;
    };
    try {
      roots = await load('');
      render();
    } catch (e) {
      app.notify((e as Error).message);
    }
  }
  void reload();
  return { el };
}
