// Shared by the end-to-end tests: where things are, whether the tests can
// run here, the service in demo mode, Chromium, and signing in on the demo
// page.
import assert from 'node:assert/strict';
import { before, after } from 'node:test';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const BIN = process.env.PRESENCE_BIN ?? join(root, 'target/release/presence');
/** Screenshots go here, for a person to look at. */
export const ARTIFACTS = join(root, 'target/e2e');

/**
 * `false` when the end-to-end tests can run, else the notice to skip with.
 * Under CI=true a missing piece is an error, never a skip.
 */
export function skipReason() {
  const missing = [
    existsSync(CHROMIUM) ? null : `${CHROMIUM} (apt-get install chromium)`,
    existsSync(BIN) ? null : `${BIN} (cargo build --release)`,
  ].filter(Boolean);
  if (missing.length && process.env.CI === 'true') {
    throw new Error(`end-to-end test cannot run under CI: missing ${missing.join(', ')}`);
  }
  return missing.length ? `NOTICE: skipped, missing ${missing.join(', ')}` : false;
}

/**
 * Starts the release binary in demo mode on a free port, with `env` added to
 * its environment; resolves with the child, its base URL and the admin token
 * it printed.
 */
export async function startServer(env = {}) {
  const child = spawn(BIN, [], {
    cwd: mkdtempSync(join(tmpdir(), 'presence-e2e-')), // no .env here: demo mode
    env: { PATH: process.env.PATH, LISTEN_ADDR: '127.0.0.1:0', RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  let token = null;
  let tokenNext = false;
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error('the service printed no demo page URL')), 20000);
    lines.on('line', (line) => {
      if (tokenNext) { token = line.trim(); tokenNext = false; }
      if (line.startsWith('Demo token')) tokenNext = true;
      const match = line.match(/(http:\/\/[\d.:]+)\/demo\//);
      if (match) { clearTimeout(timer); resolveUrl(match[1]); }
    });
    child.on('exit', (code) => reject(new Error(`the service exited with ${code}`)));
  });
  assert.ok(token, 'the service printed an admin token');
  return { child, url, token };
}

/** The flags this machine needs. */
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'];

/** Debian's Chromium, headless, with the flags this machine needs. */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/**
 * Headless Chromium whose pages can really become hidden. Playwright emulates
 * focus on every page it sets up, and Chromium keeps such a page visible:
 * `document.visibilityState` stays `visible` after another tab comes to the
 * front or the window is minimised (tried with Chromium 156). Here Chromium
 * is started by hand (its own process, a fresh profile) and Playwright
 * connects over CDP with `noDefaults` (documented: no focus emulation in the
 * default context), so the pages of the default context are left alone:
 * there, bringing another tab of the window to the front hides a page as it
 * does for a person switching tabs. Contexts made with `newContext()` still
 * get Playwright's defaults (always visible). Closing the browser ends the
 * process and removes its profile.
 */
export async function launchChromiumWithTabs() {
  const { chromium } = await import('playwright-core');
  // --disable-dev-shm-usage as Playwright's launch passes it: a container's
  // /dev/shm is often too small for Chromium.
  const profile = mkdtempSync(join(tmpdir(), 'presence-chromium-'));
  const child = spawn(CHROMIUM, [...CHROMIUM_ARGS, '--headless', '--disable-dev-shm-usage',
    '--remote-debugging-port=0', `--user-data-dir=${profile}`, 'about:blank'],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((resolveExit) => child.once('exit', () => {
    try {
      // Its helper processes may still be writing for a moment.
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch {
      // A profile left in the temporary folder fails no test.
    }
    resolveExit();
  }));
  const endpoint = await new Promise((resolveEndpoint, reject) => {
    const timer = setTimeout(() => reject(new Error('Chromium printed no DevTools endpoint')), 20000);
    createInterface({ input: child.stderr }).on('line', (line) => {
      const match = line.match(/DevTools listening on (ws:\/\/\S+)/);
      if (match) { clearTimeout(timer); resolveEndpoint(match[1]); }
    });
    child.on('exit', (code) => reject(new Error(`Chromium exited with ${code}`)));
  });
  const browser = await chromium.connectOverCDP(endpoint, { noDefaults: true });
  process.on('exit', () => child.kill()); // also when a test fails half-way
  // Playwright's close only disconnects from a browser it did not launch:
  // ask Chromium itself to close, then its profile goes.
  browser.close = async () => {
    const cdp = await browser.newBrowserCDPSession();
    await cdp.send('Browser.close').catch(() => child.kill());
    await exited;
  };
  return browser;
}

/**
 * Before the file's tests (unless `skip`): the service in demo mode with `env`
 * added, and a browser from `launch`; after them, both stopped. Returns an
 * object that holds `child`, `url`, `token` and `browser` by the time the
 * tests run.
 */
export function serviceAndBrowser({ skip, env = {}, launch = launchChromium }) {
  const running = {};
  before(async () => {
    if (skip) return;
    Object.assign(running, await startServer(env));
    running.browser = await launch();
  });
  after(async () => {
    await running.browser?.close();
    running.child?.kill('SIGTERM');
  });
  return running;
}

/**
 * Opens the demo page at `base` (with `query`, e.g. `?idleAfterMs=3000`) in
 * `page` and signs in as `name`; the page's console errors and uncaught
 * errors go to `errors`, marked with the name.
 */
export async function signInOnDemo(page, base, name, errors, query = '') {
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(`${name}: ${msg.text()}`); });
  page.on('pageerror', (error) => errors.push(`${name}: ${error.message}`));
  await page.goto(`${base}/demo/${query}`);
  await page.fill('#name', name);
  await page.click('#signin');
  await page.waitForFunction((n) => document.getElementById('whoami').textContent.includes(n), name);
}
