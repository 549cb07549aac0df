// Browser tests of the web UI against real processes: a real `coffer
// server`, two real devices (daemons with --ui), and Debian's Chromium
// driven by playwright-core (never a downloaded browser). Each scenario
// checks live data on a screen; screenshots of every screen go to
// target/ui-screenshots/ (kept as CI artifacts).
//
// Run: `npm run e2e` in ui/ after `cargo build -p coffer-cli` and
// `npm run build` (scripts/test does all of it).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { Client, REPO, startServer, stopAll, waitFor } from './harness.mjs';

const SHOTS = path.join(process.env.CARGO_TARGET_DIR ?? path.join(REPO, 'target'), 'ui-screenshots');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
fs.mkdirSync(SHOTS, { recursive: true });

const results = [];
/** Called on a failure to print what the devices were doing. */
let diagnose = async () => {};
async function scenario(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, 'ok', Date.now() - t0]);
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push([name, 'FAILED', Date.now() - t0]);
    console.log(`FAIL ${name}\n${e.stack ?? e}`);
    await diagnose().catch((d) => console.log(`(no diagnosis: ${d})`));
    throw e;
  }
}

/** Shows `url` in `page`, brought to the front: a background tab gets no
 * animation frames, which would slow every click down. */
async function visit(page, url) {
  await page.bringToFront();
  await page.goto(url);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-chromium-'));
let browser;
const dirs = [];
try {
  const server = await startServer();
  dirs.push(server.data);
  const a = new Client('a');
  const b = new Client('b');
  dirs.push(a.dir, b.dir);
  a.signup(server, 'alice@example.org');
  b.login(server, 'alice@example.org');
  a.setDeviceName('alice-laptop');
  b.setDeviceName('alice-desktop');
  a.write('docs/report.txt', 'version one');
  a.write('photos/2024/beach.jpg', crypto.randomBytes(300_000));
  a.write('photos/cat.jpg', crypto.randomBytes(120_000));
  a.write('photos/2023/old.jpg', crypto.randomBytes(50_000));
  a.write('music/song.mp3', crypto.randomBytes(200_000));
  a.write('<img src=x onerror=alert(1)>.txt', 'a name that looks like markup');
  await a.startDaemon();
  await b.startDaemon();
  diagnose = async () => {
    for (const c of [a, b]) {
      console.log(`${c.name} status:`, JSON.stringify(await c.api({ type: 'get_status' })));
      console.log(`${c.name} tree:`, JSON.stringify(c.tree()).slice(0, 2000));
    }
  };

  // A fresh profile; flags from PLATFORM.md; loopback only. One profile
  // holds both devices' cookies: their names differ by port.
  browser = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 760 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const pa = await browser.newPage();
  const pb = await browser.newPage();
  const dialogs = [];
  for (const p of [pa, pb]) {
    p.on('dialog', (d) => { dialogs.push(d.message()); void d.dismiss(); });
    p.on('pageerror', (e) => { throw e; });
  }
  await visit(pa, a.loginLink);
  await visit(pb, b.loginLink);

  await scenario('status shows live state and quota', async () => {
    await waitFor('B to have A\'s files', () => b.read('docs/report.txt') === 'version one' && fs.existsSync(b.file('music/song.mp3')));
    for (const p of [pa, pb]) {
      await p.locator('#sync-state[data-state="up_to_date"]').waitFor({ timeout: 30000 });
      await p.locator('#quota-text', { hasText: 'of 50 GB used' }).waitFor();
    }
    const used = Number(await pa.locator('#quota-bar').getAttribute('data-used'));
    assert.ok(used >= 650_000, `quota counts the files (${used})`);
    assert.match(await pa.locator('#sync-root').textContent(), /Coffer$/);
    await shot(pa, 'status');
    await pa.emulateMedia({ colorScheme: 'dark' });
    await shot(pa, 'status-dark');
    await pa.emulateMedia({ colorScheme: 'light' });
  });

  await scenario('activity lists transfers, names as text', async () => {
    await visit(pb, `${b.url}#activity`);
    await pb.locator('#activity-list li[data-kind="downloaded"]', { hasText: 'docs/report.txt' }).waitFor();
    const evil = pb.locator('#activity-list li', { hasText: '<img src=x onerror=alert(1)>.txt' });
    await evil.first().waitFor();
    assert.equal(await pb.locator('#activity-list img').count(), 0, 'a file name never becomes markup');
    assert.equal(dialogs.length, 0, 'no script ran from a name');
    await visit(pa, `${a.url}#activity`);
    await pa.locator('#activity-list li[data-kind="uploaded"]', { hasText: 'photos/cat.jpg' }).waitFor();
    await shot(pb, 'activity');
  });

  await scenario('version history restores an old version everywhere', async () => {
    a.write('docs/report.txt', 'version two');
    await waitFor('B to get version two', () => b.read('docs/report.txt') === 'version two');
    await visit(pa, `${a.url}#versions`);
    await pa.locator('#version-files button[data-path="docs"]').click();
    await pa.locator('#version-files button[data-path="docs/report.txt"]').click();
    await waitFor('two versions listed', async () => (await pa.locator('#version-table tbody tr').count()) === 2);
    await shot(pa, 'versions');
    await pa.locator('#version-table button.restore').click();
    await pa.locator('#confirm-restore').click();
    await waitFor('A to have version one back', () => a.read('docs/report.txt') === 'version one');
    await waitFor('B to have version one back', () => b.read('docs/report.txt') === 'version one');
    await waitFor('three versions listed', async () => (await pa.locator('#version-table tbody tr').count()) === 3);
  });

  await scenario('a conflict from two devices is resolved in the dialog and both converge', async () => {
    await visit(pb, `${b.url}#status`);
    await pb.locator('#pause-button').click();
    await pb.locator('#sync-state[data-state="paused"]').waitFor();
    b.write('docs/report.txt', 'B edited this while paused');
    a.write('docs/report.txt', 'A edited this meanwhile');
    await waitFor('A\'s edit to be the current version on the store', async () => {
      const r = await a.api({ type: 'list_versions', path: 'docs/report.txt' });
      const cur = r.items.find((v) => v.current);
      return cur && cur.size === 'A edited this meanwhile'.length && cur.device === 'alice-laptop';
    });
    await pb.locator('#pause-button').click();
    await pb.locator('#conflict-badge', { hasText: '1' }).waitFor({ timeout: 30000 });
    await visit(pb, `${b.url}#conflicts`);
    await pb.locator('.conflict-item', { hasText: 'docs/report.txt' }).locator('button.resolve').click();
    const mine = pb.locator('dialog .side.mine');
    const theirs = pb.locator('dialog .side.theirs');
    await mine.waitFor();
    assert.equal(await mine.locator('.side-device').textContent(), 'alice-desktop');
    assert.equal(await theirs.locator('.side-device').textContent(), 'alice-laptop');
    assert.equal(await mine.locator('.side-size').textContent(), '26 B');
    assert.equal(await theirs.locator('.side-size').textContent(), '23 B');
    const href = await mine.locator('a', { hasText: 'Open' }).getAttribute('href');
    const opened = await pb.evaluate((u) => fetch(u).then((r) => r.text()), href);
    assert.equal(opened, 'B edited this while paused', 'either side can be opened');
    await shot(pb, 'conflict-dialog');
    await pb.locator('#keep-mine').click();
    await pb.locator('#no-conflicts').waitFor();
    await waitFor('both devices to converge on B\'s text', () =>
      a.read('docs/report.txt') === 'B edited this while paused' &&
      b.read('docs/report.txt') === 'B edited this while paused' &&
      JSON.stringify(a.tree()) === JSON.stringify(b.tree()));
    assert.ok(!Object.keys(a.tree()).some((k) => k.includes('conflicted copy')), 'the copy is gone after keep mine');
    await shot(pb, 'conflicts');
  });

  await scenario('unchecking a folder in selective sync removes its local copy', async () => {
    await visit(pb, `${b.url}#selective`);
    const photos = pb.locator('#folder-tree input[data-path="photos"]');
    await photos.waitFor();
    assert.equal(await photos.isChecked(), true);
    await pb.locator('li[data-path="photos"] .expander').click();
    await pb.locator('#folder-tree input[data-path="photos/2024"]').waitFor();
    assert.match(await pb.locator('li[data-path="photos"] > .tree-row .size').textContent(), /470 KB/);
    await photos.uncheck();
    await pb.locator('#confirm-uncheck').waitFor();
    await shot(pb, 'selective-warning');
    await pb.locator('#confirm-uncheck').click();
    await waitFor('B\'s photos folder to be removed', () => !fs.existsSync(b.file('photos')));
    assert.ok(fs.existsSync(a.file('photos/cat.jpg')), 'A keeps it');
    await waitFor('the box to show unchecked', async () => !(await photos.isChecked()));
    assert.equal(await pb.locator('#folder-tree input[data-path="docs"]').isChecked(), true);
    await shot(pb, 'selective');

    // Checking one folder inside the unchecked one brings that folder back
    // (and the files directly in its parents), not its sibling folders;
    // the parent shows mixed.
    const closed = pb.locator('li[data-path="photos"] > .tree-row .expander[aria-expanded="false"]');
    if (await closed.count()) await closed.click();
    const y2024 = pb.locator('#folder-tree input[data-path="photos/2024"]');
    await y2024.waitFor();
    assert.equal(await y2024.isChecked(), false, 'inside an unchecked folder');
    await y2024.check();
    await waitFor('B to get photos/2024 back', () => fs.existsSync(b.file('photos/2024/beach.jpg')));
    assert.ok(!fs.existsSync(b.file('photos/2023')), 'the sibling folder stays off this device');
    await waitFor('photos to show mixed', async () => photos.evaluate((e) => e.indeterminate && e.getAttribute('aria-checked') === 'mixed'));
    assert.equal(await y2024.isChecked(), true);
    await shot(pb, 'selective-mixed');
  });

  await scenario('a large upload moves the progress bar and the quota bar', async () => {
    await visit(pa, `${a.url}#settings`);
    await pa.locator('#set-upload').fill('6000');
    await pa.locator('#settings-save').click();
    await pa.locator('#settings-saved', { hasText: 'Saved.' }).waitFor();
    await shot(pa, 'settings');
    await visit(pa, `${a.url}#status`);
    await pa.locator('#quota-text', { hasText: 'of 50 GB used' }).waitFor();
    const quotaBefore = Number(await pa.locator('#quota-bar').getAttribute('data-used'));
    a.write('video/holiday.mov', crypto.randomBytes(30 * 1024 * 1024));
    const seen = [];
    const boxes = new Set();
    await waitFor('the overall bar to move', async () => {
      if ((await pa.locator('#sync-state').getAttribute('data-state')) !== 'syncing') return false;
      if (await pa.locator('#current-files li', { hasText: 'holiday.mov' }).count()) {
        const box = await pa.locator('#quota-bar').boundingBox();
        boxes.add(`${box.x},${box.y},${box.width},${box.height}`);
      }
      const v = Number(await pa.locator('#overall-progress').getAttribute('value') ?? (await pa.locator('#overall-progress').evaluate((e) => e.value)));
      if (v > 0 && v < 100 && !seen.includes(v)) seen.push(v);
      return seen.length >= 3;
    }, 60000);
    const file = pa.locator('#current-files li', { hasText: 'video/holiday.mov' });
    await file.waitFor();
    assert.ok(Number(await file.locator('progress').evaluate((e) => e.value)) > 0, 'the file\'s own bar moves too');
    await shot(pa, 'status-uploading');
    await pa.locator('#sync-state[data-state="up_to_date"]').waitFor({ timeout: 60000 });
    await waitFor('the quota bar to count the upload', async () =>
      Number(await pa.locator('#quota-bar').getAttribute('data-used')) >= quotaBefore + 30 * 1024 * 1024);
    assert.ok(seen.every((v, i) => i === 0 || v > seen[i - 1]), `progress only grows: ${seen}`);
    assert.equal(boxes.size, 1, `nothing below the progress moves while it updates: ${[...boxes]}`);
    await pa.locator('#set-upload').count(); // still on the page
    await a.api({ type: 'update_settings', upload_limit_kib: 0 });
  });

  await scenario('the screens can be reached with the keyboard', async () => {
    await visit(pa, `${a.url}#status`);
    await pa.locator('#sync-state').waitFor();
    let reached = false;
    for (let i = 0; i < 12 && !reached; i++) {
      await pa.keyboard.press('Tab');
      reached = await pa.evaluate(() => document.activeElement?.id === 'nav-settings');
    }
    assert.ok(reached, 'Tab reaches the Settings link');
    await pa.keyboard.press('Enter');
    await pa.locator('#settings-title').waitFor();
    await pa.locator('label[for="set-device-name"]').waitFor();
    assert.equal(await pa.locator('#nav-settings').getAttribute('aria-current'), 'page');
  });

  await scenario('account shows both devices', async () => {
    await visit(pa, `${a.url}#account`);
    await pa.locator('#account-email', { hasText: 'alice@example.org' }).waitFor();
    assert.equal(await pa.locator('#session-table tbody tr').count(), 2);
    await shot(pa, 'account');
  });

  await scenario('without the login cookie the UI says how to sign in', async () => {
    // Cookies belong to a host name: localhost has none yet.
    const p = await browser.newPage();
    await p.goto(a.url.replace('127.0.0.1', 'localhost'));
    await p.locator('#signed-out').waitFor();
    await shot(p, 'signed-out');
    await p.close();
  });
} finally {
  await browser?.close().catch(() => {});
  stopAll();
  fs.rmSync(userData, { recursive: true, force: true });
  // Daemons need a moment to exit before their folders go.
  await new Promise((r) => setTimeout(r, 300));
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}
console.log(`\n${results.filter((r) => r[1] === 'ok').length}/${results.length} browser scenarios passed; screenshots in ${SHOTS}`);
