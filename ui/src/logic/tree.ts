// The selective-sync tree: folders loaded level by level, each with a
// tri-state checkbox (checked: synced here; unchecked: not; mixed: some
// folders inside are not). Pure: the screen renders what this computes.

import type { FolderSync, TreeEntry } from '../api/types';

export type Check = 'checked' | 'unchecked' | 'mixed';

/** A folder of the tree, with its children once loaded. */
export interface TreeNode {
  name: string;
  path: string;
  size: number;
  files: number;
  hasFolders: boolean;
  sync: FolderSync;
  children: TreeNode[] | null;
  expanded: boolean;
}

/** The checkbox of a folder state. */
export function checkOf(sync: FolderSync): Check {
  return sync === 'included' ? 'checked' : sync === 'excluded' ? 'unchecked' : 'mixed';
}

/** Folder entries of a listing, as tree nodes (files are left out). */
export function nodesOf(entries: TreeEntry[]): TreeNode[] {
  return entries
    .filter((e) => e.kind === 'folder')
    .map((e) => ({
      name: e.name,
      path: e.path,
      size: e.size,
      files: e.files,
      hasFolders: e.has_folders,
      sync: e.sync,
      children: null,
      expanded: false,
    }));
}

/** The node at `path`, if loaded. */
export function find(nodes: TreeNode[], path: string): TreeNode | null {
  for (const n of nodes) {
    if (n.path === path) return n;
    if (path.startsWith(`${n.path}/`) && n.children) return find(n.children, path);
  }
  return null;
}

/** What clicking a checkbox asks for: include a folder that is not fully
 * synced (unchecked or mixed), exclude one that is. */
export function toggleIntent(node: TreeNode): { include: boolean } {
  return { include: checkOf(node.sync) !== 'checked' };
}

/** A folder's new state after a change, and what its loaded subtree and
 * the parents' mixed states become. Returns the new roots (immutable). */
export function applyChange(nodes: TreeNode[], path: string, included: boolean): TreeNode[] {
  const set = (n: TreeNode, sync: FolderSync): TreeNode => ({
    ...n,
    sync,
    children: n.children ? n.children.map((c) => set(c, sync)) : null,
  });
  const walk = (list: TreeNode[]): TreeNode[] =>
    list.map((n) => {
      if (n.path === path) return set(n, included ? 'included' : 'excluded');
      if (path.startsWith(`${n.path}/`) && n.children) {
        const children = walk(n.children);
        return { ...n, children, sync: parentState(n.sync, children) };
      }
      return n;
    });
  return walk(nodes);
}

/** A parent's state from its (loaded) children. */
export function parentState(own: FolderSync, children: TreeNode[]): FolderSync {
  if (children.length === 0) return own;
  if (children.every((c) => c.sync === 'included')) return own === 'excluded' ? 'partial' : 'included';
  return 'partial';
}

/** The warning shown before unchecking removes local copies, or null when
 * nothing local would be removed. */
export function uncheckWarning(node: TreeNode, formatBytes: (n: number) => string): string | null {
  if (checkOf(node.sync) === 'unchecked') return null;
  const what = node.files === 1 ? '1 file' : `${node.files} files`;
  return `Stop syncing “${node.name}” to this device? Its local copy (${what}, ${formatBytes(node.size)}) will be removed from this computer. It stays in your Coffer and on your other devices.`;
}
