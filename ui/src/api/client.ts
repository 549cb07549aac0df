// The only module of the UI that talks to the engine. At start-up it picks
// a transport: Tauri IPC inside the desktop shell (one `control` command
// carries a request, `control-event` events carry the stream), loopback
// HTTP anywhere else (POST /api, server-sent events at /api/events, the
// token in an HttpOnly cookie set by the one-time login link).

import type { EngineEvent, ErrorCode, Request, Response, Setup, SetupRequest } from './types';

/** An error from the engine (or the transport), with its stable code. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** What the UI needs of a transport. */
export interface Transport {
  readonly kind: 'tauri' | 'http';
  call(req: Request | SetupRequest): Promise<Response | Setup>;
  /** Events from now on; `onLink` says whether the stream is connected. Returns a stop function. */
  subscribe(onEvent: (e: EngineEvent) => void, onLink: (up: boolean) => void): () => void;
  /** A URL that opens a file of the sync folder, when the transport has one. */
  fileUrl(path: string): string | null;
}

interface TauriGlobal {
  core: { invoke(cmd: string, args: unknown): Promise<unknown> };
  event: { listen(name: string, cb: (e: { payload: unknown }) => void): Promise<() => void> };
}

/** The shape of `window` this module looks at (so tests can pass a fake). */
export interface HostWindow {
  __TAURI__?: TauriGlobal;
  location: { protocol: string };
}

/** Tauri when its global is there, else HTTP. */
export function chooseTransport(w: HostWindow): 'tauri' | 'http' {
  const t = w.__TAURI__ as Partial<TauriGlobal> | undefined;
  return typeof t?.core?.invoke === 'function' && typeof t?.event?.listen === 'function' ? 'tauri' : 'http';
}

function asApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e && typeof e === 'object' && 'code' in e && 'message' in e) {
    return new ApiError(String((e as { code: unknown }).code) as ErrorCode, String((e as { message: unknown }).message));
  }
  return new ApiError('transport', e instanceof Error ? e.message : String(e));
}

/** The loopback HTTP transport. */
export function httpTransport(fetchFn: typeof fetch = fetch.bind(globalThis)): Transport {
  return {
    kind: 'http',
    async call(req) {
      let res: globalThis.Response;
      try {
        res = await fetchFn('/api', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          credentials: 'same-origin',
          body: JSON.stringify(req),
        });
      } catch (e) {
        throw new ApiError('transport', `cannot reach the Coffer daemon: ${String(e)}`);
      }
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        throw body && typeof body.code === 'string'
          ? new ApiError(body.code, String(body.message ?? ''))
          : new ApiError('transport', `HTTP ${res.status}`);
      }
      return body as Response;
    },
    subscribe(onEvent, onLink) {
      const es = new EventSource('/api/events');
      es.onopen = () => onLink(true);
      es.onerror = () => onLink(false);
      es.onmessage = (m) => {
        try {
          onEvent(JSON.parse(m.data) as EngineEvent);
        } catch {
          // A malformed event is dropped; the next status replaces it.
        }
      };
      return () => es.close();
    },
    fileUrl(path) {
      return `/api/file?path=${encodeURIComponent(path)}`;
    },
  };
}

/** The Tauri IPC transport. */
export function tauriTransport(t: TauriGlobal): Transport {
  return {
    kind: 'tauri',
    async call(req) {
      try {
        return (await t.core.invoke('control', { request: req })) as Response;
      } catch (e) {
        throw asApiError(e);
      }
    },
    subscribe(onEvent, onLink) {
      let stop: (() => void) | null = null;
      let stopped = false;
      t.event
        .listen('control-event', (e) => onEvent(e.payload as EngineEvent))
        .then((s) => {
          if (stopped) s();
          else {
            stop = s;
            onLink(true);
          }
        })
        .catch(() => onLink(false));
      return () => {
        stopped = true;
        stop?.();
      };
    },
    fileUrl() {
      return null;
    },
  };
}

/** The transport for this window. */
export function connect(w: HostWindow = window as unknown as HostWindow): Transport {
  return chooseTransport(w) === 'tauri' && w.__TAURI__ ? tauriTransport(w.__TAURI__) : httpTransport();
}

type Of<T extends Response['type']> = Extract<Response, { type: T }>;

/** Typed requests over a transport. */
export class Api {
  constructor(readonly transport: Transport) {}

  async ask<T extends Response['type']>(req: Request, expect: T): Promise<Of<T>> {
    const res = (await this.transport.call(req)) as Response;
    if (res.type !== expect) throw new ApiError('internal', `expected ${expect}, got ${res.type}`);
    return res as Of<T>;
  }

  /** A first-run step (the desktop app only). */
  async setup(req: SetupRequest): Promise<Setup> {
    const res = await this.transport.call(req);
    if (res.type !== 'setup') throw new ApiError('internal', `expected setup, got ${res.type}`);
    return res;
  }

  status() { return this.ask({ type: 'get_status' }, 'status'); }
  quota() { return this.ask({ type: 'get_quota' }, 'quota'); }
  activity() { return this.ask({ type: 'get_activity' }, 'activity'); }
  conflicts() { return this.ask({ type: 'list_conflicts' }, 'conflicts'); }
  resolve(path: string, keep: 'mine' | 'theirs' | 'both') {
    return this.ask({ type: 'resolve_conflict', path, keep }, 'done');
  }
  folder(path: string) { return this.ask({ type: 'list_folder', path }, 'folder'); }
  setFolderSync(path: string, included: boolean) {
    return this.ask({ type: 'set_folder_sync', path, included }, 'folder_sync');
  }
  settings() { return this.ask({ type: 'get_settings' }, 'settings'); }
  updateSettings(patch: Omit<Extract<Request, { type: 'update_settings' }>, 'type'>) {
    return this.ask({ type: 'update_settings', ...patch }, 'settings');
  }
  versions(path: string) { return this.ask({ type: 'list_versions', path }, 'versions'); }
  restore(path: string, revision: number) { return this.ask({ type: 'restore_version', path, revision }, 'restored'); }
  account() { return this.ask({ type: 'get_account' }, 'account'); }
  revokeSession(id: string) { return this.ask({ type: 'revoke_session', id }, 'done'); }
  logout() { return this.ask({ type: 'logout' }, 'done'); }
}
