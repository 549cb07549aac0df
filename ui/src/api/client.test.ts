import { describe, expect, it, vi } from 'vitest';
import { Api, ApiError, chooseTransport, httpTransport, tauriTransport } from './client';

describe('transport selection', () => {
  it('picks Tauri IPC only when its global is complete', () => {
    const tauri = { core: { invoke: async () => ({}) }, event: { listen: async () => () => {} } };
    expect(chooseTransport({ location: { protocol: 'http:' } })).toBe('http');
    expect(chooseTransport({ __TAURI__: tauri, location: { protocol: 'tauri:' } })).toBe('tauri');
    const broken = { core: {}, event: {} } as never;
    expect(chooseTransport({ __TAURI__: broken, location: { protocol: 'http:' } })).toBe('http');
  });
});

describe('http transport', () => {
  it('posts JSON to /api and returns the response', async () => {
    const fetchFn = vi.fn(async () => new Response(JSON.stringify({ type: 'quota', used: 1, limit: 2 }), { status: 200 }));
    const api = new Api(httpTransport(fetchFn as unknown as typeof fetch));
    expect(await api.quota()).toEqual({ type: 'quota', used: 1, limit: 2 });
    const [url, init] = fetchFn.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('/api');
    expect(init.method).toBe('POST');
    expect((init.headers as Record<string, string>)['Content-Type']).toBe('application/json');
    expect(JSON.parse(String(init.body))).toEqual({ type: 'get_quota' });
  });

  it('turns error bodies into ApiErrors with their code', async () => {
    const fetchFn = async () => new Response(JSON.stringify({ code: 'unauthorized', message: 'sign in' }), { status: 401 });
    const api = new Api(httpTransport(fetchFn as unknown as typeof fetch));
    await expect(api.status()).rejects.toMatchObject({ code: 'unauthorized', message: 'sign in' });
    const down = async () => { throw new TypeError('connection refused'); };
    await expect(new Api(httpTransport(down as unknown as typeof fetch)).status()).rejects.toBeInstanceOf(ApiError);
  });

  it('refuses an answer of the wrong type', async () => {
    const fetchFn = async () => new Response(JSON.stringify({ type: 'done' }), { status: 200 });
    await expect(new Api(httpTransport(fetchFn as unknown as typeof fetch)).quota()).rejects.toMatchObject({ code: 'internal' });
  });

  it('links files through the API, encoded', () => {
    expect(httpTransport().fileUrl('a b/c&d.txt')).toBe('/api/file?path=a%20b%2Fc%26d.txt');
  });
});

describe('tauri transport', () => {
  it('invokes the control command and maps thrown errors', async () => {
    const invoke = vi.fn(async (_cmd: string, args: unknown) => {
      if ((args as { request: { type: string } }).request.type === 'logout') throw { code: 'refused', message: 'no' };
      return { type: 'done' };
    });
    const t = tauriTransport({ core: { invoke }, event: { listen: async () => () => {} } });
    expect(await t.call({ type: 'revoke_session', id: 'x' })).toEqual({ type: 'done' });
    expect(invoke).toHaveBeenCalledWith('control', { request: { type: 'revoke_session', id: 'x' } });
    await expect(t.call({ type: 'logout' })).rejects.toMatchObject({ code: 'refused' });
    expect(t.fileUrl('a')).toBeNull();
  });

  it('delivers events and stops listening', async () => {
    let handler: ((e: { payload: unknown }) => void) | null = null;
    const unlisten = vi.fn();
    const t = tauriTransport({
      core: { invoke: async () => ({}) },
      event: { listen: async (_n, cb) => { handler = cb; return unlisten; } },
    });
    const got: unknown[] = [];
    const link = vi.fn();
    const stop = t.subscribe((e) => got.push(e), link);
    await Promise.resolve();
    await Promise.resolve();
    handler!({ payload: { type: 'activity', time_ms: 1, kind: 'uploaded', path: 'a', bytes: 1 } });
    expect(got).toHaveLength(1);
    expect(link).toHaveBeenCalledWith(true);
    stop();
    expect(unlisten).toHaveBeenCalled();
  });
});
