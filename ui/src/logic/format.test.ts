import { describe, expect, it } from 'vitest';
import { activityLabel, formatBytes, formatEta, formatSpeed, percent, stateLabel } from './format';

describe('formatBytes', () => {
  it('uses decimal units with at most one decimal', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1000)).toBe('1 KB');
    expect(formatBytes(1536)).toBe('1.5 KB');
    expect(formatBytes(420_000)).toBe('420 KB');
    expect(formatBytes(31_457_280)).toBe('31.5 MB');
    expect(formatBytes(50_000_000_000)).toBe('50 GB');
    expect(formatBytes(2.5e15)).toBe('2.5 PB');
  });
  it('shows a dash for nonsense', () => {
    expect(formatBytes(-1)).toBe('–');
    expect(formatBytes(Number.NaN)).toBe('–');
  });
});

describe('formatEta and formatSpeed', () => {
  it('reads like a person would say it', () => {
    expect(formatEta(0.2)).toBe('1 s');
    expect(formatEta(59)).toBe('59 s');
    expect(formatEta(61)).toBe('1 min');
    expect(formatEta(3600)).toBe('1 h');
    expect(formatEta(3600 + 5 * 60)).toBe('1 h 5 min');
    expect(formatEta(null)).toBe('–');
    expect(formatEta(Number.POSITIVE_INFINITY)).toBe('–');
    expect(formatSpeed(3_200_000)).toBe('3.2 MB/s');
    expect(formatSpeed(0)).toBe('–');
    expect(formatSpeed(null)).toBe('–');
  });
});

describe('percent', () => {
  it('is a whole number clamped to 0..100', () => {
    expect(percent(0, 0)).toBe(0);
    expect(percent(1, 3)).toBe(33);
    expect(percent(5, 3)).toBe(100);
    expect(percent(-1, 3)).toBe(0);
  });
});

describe('labels', () => {
  it('names every state and activity kind', () => {
    for (const s of ['up_to_date', 'syncing', 'paused', 'offline', 'error', 'needs_confirmation']) {
      expect(stateLabel(s)).not.toBe(s);
    }
    for (const k of ['uploaded', 'downloaded', 'deleted_remote', 'deleted_local', 'conflict']) {
      expect(activityLabel(k)).not.toBe(k);
    }
  });
});
