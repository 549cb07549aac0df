// Formatting numbers for people: sizes, speeds, durations, times. Pure.

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

/** 1536 → "1.5 KB" (decimal units, as disks and quotas are sold). */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '–';
  let i = 0;
  let v = n;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i += 1;
  }
  if (i === 0) return `${Math.round(v)} B`;
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, '')} ${UNITS[i]}`;
}

/** Bytes per second → "3.2 MB/s". */
export function formatSpeed(bytesPerSec: number | null): string {
  if (bytesPerSec === null || !Number.isFinite(bytesPerSec) || bytesPerSec <= 0) return '–';
  return `${formatBytes(bytesPerSec)}/s`;
}

/** Seconds left → "45 s", "3 min", "2 h 5 min"; unknown → "–". */
export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  const rest = m % 60;
  return rest ? `${h} h ${rest} min` : `${h} h`;
}

/** done of total as a whole percentage in 0..100 (0 when total is 0). */
export function percent(done: number, total: number): number {
  if (!(total > 0)) return 0;
  return Math.max(0, Math.min(100, Math.floor((done / total) * 100)));
}

/** A moment, in the person's locale. */
export function formatTime(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms) || ms <= 0) return '–';
  return new Date(ms).toLocaleString();
}

/** What a sync state is called. */
export function stateLabel(state: string): string {
  switch (state) {
    case 'up_to_date': return 'Up to date';
    case 'syncing': return 'Syncing';
    case 'paused': return 'Paused';
    case 'offline': return 'Offline, retrying';
    case 'error': return 'Needs attention';
    case 'needs_confirmation': return 'Waiting for confirmation';
    default: return state;
  }
}

/** What an activity kind is called. */
export function activityLabel(kind: string): string {
  switch (kind) {
    case 'uploaded': return 'Uploaded';
    case 'downloaded': return 'Downloaded';
    case 'deleted_remote': return 'Deleted (here)';
    case 'deleted_local': return 'Deleted (elsewhere)';
    case 'conflict': return 'Conflict';
    default: return kind;
  }
}
