// End to end in real headless Chromium against the release binary in demo
// mode: users A and B in two browser contexts replay the original scenario
// while a third page, subscribed through subscribeModuleStats, sees every
// count change within 2 s; closing A's tab drops A at once.
//
// Needs /usr/bin/chromium (Debian's `chromium`) and `npm ci` in clients/js.
// Without Chromium a local run skips with a notice; with CI=true it fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const BIN = process.env.PRESENCE_BIN ?? join(root, 'target/release/presence');
const ARTIFACTS = join(root, 'target/e2e');
const CHANGE_WITHIN_MS = 2000;

const missing = [
  existsSync(CHROMIUM) ? null : `${CHROMIUM} (apt-get install chromium)`,
  existsSync(BIN) ? null : `${BIN} (cargo build --release)`,
].filter(Boolean);
if (missing.length && process.env.CI === 'true') {
  throw new Error(`end-to-end test cannot run under CI: missing ${missing.join(', ')}`);
}
const skip = missing.length ? `NOTICE: skipped, missing ${missing.join(', ')}` : false;

let server;
let base;
let browser;
let scratch;

async function startServer() {
  const child = spawn(BIN, [], {
    cwd: mkdtempSync(join(tmpdir(), 'presence-e2e-')), // no .env here: demo mode
    env: { PATH: process.env.PATH, LISTEN_ADDR: '127.0.0.1:0', RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error('the service printed no demo page URL')), 20000);
    lines.on('line', (line) => {
      const match = line.match(/(http:\/\/[\d.:]+)\/demo\//);
      if (match) { clearTimeout(timer); resolveUrl(match[1]); }
    });
    child.on('exit', (code) => reject(new Error(`the service exited with ${code}`)));
  });
  return { child, url };
}

before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  ({ child: server, url: base } = await startServer());
  scratch = mkdtempSync(join(tmpdir(), 'presence-chromium-'));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Opens the demo page in a new context as `name`, collecting console errors. */
async function openAs(name, errors) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(`${name}: ${msg.text()}`); });
  page.on('pageerror', (error) => errors.push(`${name}: ${error.message}`));
  await page.goto(`${base}/demo/`);
  await page.fill('#name', name);
  await page.click('#signin');
  await page.waitForFunction((n) => document.getElementById('whoami').textContent.includes(n), name);
  return { context, page };
}

/** Waits until the watcher's page shows these activeNow counts. */
async function expectActive(watcher, pms, ih, why) {
  const read = () => watcher.evaluate(() => [...['pms', 'ih']].map(
    (code) => document.querySelector(`#card-${code} [data-count=activeNow]`).textContent));
  try {
    await watcher.waitForFunction(
      ([p, i]) => document.querySelector('#card-pms [data-count=activeNow]').textContent === String(p)
        && document.querySelector('#card-ih [data-count=activeNow]').textContent === String(i),
      [pms, ih],
      { timeout: CHANGE_WITHIN_MS, polling: 50 },
    );
  } catch {
    assert.fail(`${why}: expected pms ${pms}, ih ${ih} within ${CHANGE_WITHIN_MS} ms, saw ${await read()}`);
  }
}

test('two users, a watcher, the original scenario, and a closed tab', { skip }, async () => {
  const errors = [];
  const watcher = (await openAs('watcher', errors)).page;
  await expectActive(watcher, 0, 0, 'nobody is in a module yet');

  const a = await openAs('alice', errors);
  const b = await openAs('bob', errors);
  await a.page.click('[data-enter=pms]');
  await expectActive(watcher, 1, 0, 'A entered procurement');
  await b.page.click('[data-enter=ih]');
  await expectActive(watcher, 1, 1, 'B entered innovation');
  await a.page.click('[data-enter=ih]');
  await expectActive(watcher, 0, 2, 'A moved to innovation');
  // Today and in total keep A in procurement.
  assert.equal(await watcher.textContent('#card-pms [data-count=today]'), '1');

  mkdirSync(ARTIFACTS, { recursive: true });
  await watcher.screenshot({ path: join(ARTIFACTS, 'demo.png'), fullPage: true });

  // Closing A's tab ends A's session at once (pagehide → DELETE keepalive).
  await a.page.close({ runBeforeUnload: true });
  await expectActive(watcher, 0, 1, 'A closed the tab');

  assert.deepEqual(errors, [], 'no console errors');
});
