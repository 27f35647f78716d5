// Shared by the end-to-end tests: where things are, whether the tests can
// run here, the service in demo mode, and Chromium.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
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
 * Starts the release binary in demo mode on a free port; resolves with the
 * child, its base URL and the admin token it printed.
 */
export async function startServer() {
  const child = spawn(BIN, [], {
    cwd: mkdtempSync(join(tmpdir(), 'presence-e2e-')), // no .env here: demo mode
    env: { PATH: process.env.PATH, LISTEN_ADDR: '127.0.0.1:0', RUST_LOG: 'warn' },
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

/** Debian's Chromium, headless, with the flags this machine needs. */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
}
