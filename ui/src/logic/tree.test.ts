import { describe, expect, it } from 'vitest';
import type { TreeEntry } from '../api/types';
import { applyChange, checkOf, find, nodesOf, parentState, toggleIntent, uncheckWarning, type TreeNode } from './tree';
import { formatBytes } from './format';

const entry = (path: string, sync: TreeEntry['sync'], kind: TreeEntry['kind'] = 'folder'): TreeEntry => ({
  name: path.split('/').pop() ?? path,
  path,
  kind,
  size: 2_000_000,
  files: 3,
  has_folders: true,
  sync,
  modified_ms: null,
});

describe('tri-state checkboxes', () => {
  it('maps folder states to checkbox states', () => {
    expect(checkOf('included')).toBe('checked');
    expect(checkOf('excluded')).toBe('unchecked');
    expect(checkOf('partial')).toBe('mixed');
  });

  it('keeps folders only', () => {
    const nodes = nodesOf([entry('a', 'included'), entry('f.txt', 'included', 'file')]);
    expect(nodes.map((n) => n.path)).toEqual(['a']);
    expect(nodes[0].children).toBeNull();
  });

  it('clicking a checked box excludes; unchecked or mixed includes', () => {
    const [a, b, c] = nodesOf([entry('a', 'included'), entry('b', 'excluded'), entry('c', 'partial')]);
    expect(toggleIntent(a)).toEqual({ include: false });
    expect(toggleIntent(b)).toEqual({ include: true });
    expect(toggleIntent(c)).toEqual({ include: true });
  });

  it('a change reaches the loaded subtree and makes parents mixed', () => {
    const root: TreeNode[] = nodesOf([entry('a', 'included')]);
    root[0].children = nodesOf([entry('a/x', 'included'), entry('a/y', 'included')]);
    root[0].children[0].children = nodesOf([entry('a/x/deep', 'included')]);
    const after = applyChange(root, 'a/x', false);
    expect(find(after, 'a')?.sync).toBe('partial');
    expect(find(after, 'a/x')?.sync).toBe('excluded');
    expect(find(after, 'a/x/deep')?.sync).toBe('excluded');
    expect(find(after, 'a/y')?.sync).toBe('included');
    expect(root[0].sync).toBe('included'); // the input is not mutated
    const back = applyChange(after, 'a/x', true);
    expect(find(back, 'a')?.sync).toBe('included');
  });

  it('a parent with every child included stays mixed if it was excluded itself', () => {
    const kids = nodesOf([entry('p/a', 'included')]);
    expect(parentState('excluded', kids)).toBe('partial');
    expect(parentState('included', kids)).toBe('included');
    expect(parentState('excluded', [])).toBe('excluded');
  });

  it('warns before unchecking removes local copies, and only then', () => {
    const [a, b] = nodesOf([entry('photos', 'included'), entry('old', 'excluded')]);
    const w = uncheckWarning(a, formatBytes);
    expect(w).toContain('“photos”');
    expect(w).toContain('3 files, 2 MB');
    expect(w).toContain('removed from this computer');
    expect(uncheckWarning(b, formatBytes)).toBeNull();
  });
});
