// Real processes for the browser tests: a `coffer server` on a free
// loopback port, `coffer` clients with their own homes and folders, each
// daemon serving the web UI. Every process is stopped by its pid.

import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.COFFER_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(REPO, 'target'), 'debug', 'coffer');
export const PASSWORD = 'correct horse battery staple';
const ENV = { ...process.env, COFFER_INSECURE_FAST_KDF: '1', RUST_LOG: 'warn', COFFER_UI_DIR: path.join(REPO, 'ui', 'dist') };
const procs = new Set();

/** Waits for `cond` (sync or async) with a deadline. */
export async function waitFor(what, cond, timeoutMs = 30000) {
  const start = Date.now();
  const end = start + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await cond();
      if (last) {
        if (process.env.COFFER_E2E_TIMING) console.log(`  ${Date.now() - start} ms: ${what}`);
        return last;
      }
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
}

/** Starts `coffer ARGS`; resolves with the first stdout line matching `re`. */
function startUntil(args, re, what) {
  const child = spawn(BIN, args, { env: ENV, stdio: ['ignore', 'pipe', 'inherit'] });
  procs.add(child);
  child.on('exit', () => procs.delete(child));
  const lines = createInterface({ input: child.stdout });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no "${re}" within 30 s`)), 30000);
    child.on('exit', (code) => reject(new Error(`${what} exited (${code}) before "${re}"`)));
    lines.on('line', (line) => {
      const m = line.match(re);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
  });
}

export async function startServer() {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-ui-server-'));
  const { child, match } = await startUntil(['server', '--listen', '127.0.0.1:0', '--data', data], /(http:\/\/\S+)/, 'coffer server');
  return { url: match[1], child, data };
}

export class Client {
  constructor(name) {
    this.name = name;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `coffer-ui-${name}-`));
    this.home = path.join(this.dir, 'home');
    this.root = path.join(this.dir, 'Coffer');
  }

  run(args, input) {
    const r = spawnSync(BIN, ['--home', this.home, ...args], { env: ENV, input, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`coffer ${args.join(' ')} failed: ${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }

  signup(server, email) {
    this.run(['signup', '--server', server.url, '--email', email, '--password-stdin', '--recovery-key-file', path.join(this.dir, 'rk.txt')], `${PASSWORD}\n`);
  }

  login(server, email) {
    this.run(['login', '--server', server.url, '--email', email, '--password-stdin'], `${PASSWORD}\n`);
  }

  /** Names this device (before its daemon starts). */
  setDeviceName(name) {
    const f = path.join(this.home, 'device.json');
    const d = JSON.parse(fs.readFileSync(f, 'utf8'));
    d.name = name;
    fs.writeFileSync(f, JSON.stringify(d));
  }

  async startDaemon() {
    const { child, match } = await startUntil(
      ['--home', this.home, 'sync', this.root, '--quiet', '--rescan-secs', '5', '--ui'],
      /^Web UI: (\S+) .*one-time link: (\S+)\)$/,
      `${this.name}'s daemon`,
    );
    this.daemon = child;
    this.url = match[1];
    this.loginLink = match[2];
    this.token = fs.readFileSync(path.join(this.home, 'ui-token'), 'utf8').trim();
  }

  /** One control API request, with the token. */
  async api(req) {
    const r = await fetch(`${this.url}api`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${this.token}` },
      body: JSON.stringify(req),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(`${req.type}: ${body.code}: ${body.message}`);
    return body;
  }

  file(rel) {
    return path.join(this.root, rel);
  }

  write(rel, data) {
    fs.mkdirSync(path.dirname(this.file(rel)), { recursive: true });
    fs.writeFileSync(this.file(rel), data);
  }

  read(rel) {
    try {
      return fs.readFileSync(this.file(rel), 'utf8');
    } catch {
      return null;
    }
  }

  /** path → size for every file, without .coffer. */
  tree() {
    const out = {};
    const walk = (dir, pre) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        if (!pre && e.name === '.coffer') continue;
        const rel = pre ? `${pre}/${e.name}` : e.name;
        if (e.isDirectory()) {
          out[rel] = 'dir';
          walk(path.join(dir, e.name), rel);
        } else out[rel] = fs.readFileSync(path.join(dir, e.name)).toString('base64').slice(0, 64) + `:${fs.statSync(path.join(dir, e.name)).size}`;
      }
    };
    if (fs.existsSync(this.root)) walk(this.root, '');
    return out;
  }
}

/** Stops every process started here, by pid. */
export function stopAll() {
  for (const c of procs) {
    try {
      process.kill(c.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
}
