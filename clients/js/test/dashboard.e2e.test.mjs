// The admin dashboard (GET /admin) end to end, in real headless Chromium
// against the release binary in demo mode: with the printed admin token the
// page shows live counts that follow heartbeats within 2 s, the history chart
// (when the service has the history endpoint), the live sessions with a
// module filter and paging; a non-admin token gets a clear "not an admin"
// message and a bad one "invalid or expired". No console errors; screenshots
// at laptop and phone width go to target/e2e/ for a person to look at.
//
// Needs /usr/bin/chromium (Debian's `chromium`) and `npm ci` in clients/js.
// Without Chromium a local run skips with a notice; with CI=true it fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { ARTIFACTS, launchChromium, skipReason, startServer } from './support.mjs';

const CHANGE_WITHIN_MS = 2000;
// The list refreshes 1 s after a count changes, and every 15 s in any case.
const LIST_WITHIN_MS = 17000;
const skip = skipReason();

let server;
let base;
let adminToken;
let browser;
// GET /api/admin/history's status and body: 404 in a build without the
// endpoint, where the page says "not available" and the chart checks are skipped.
let historyStatus;
let history;

before(async () => {
  if (skip) return;
  ({ child: server, url: base, token: adminToken } = await startServer());
  const probe = await fetch(`${base}/api/admin/history?window=1h`, { headers: { Authorization: `Bearer ${adminToken}` } });
  historyStatus = probe.status;
  history = historyStatus === 200 ? await probe.json() : null;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
});

/** A (non-admin) demo token for `user`. */
async function mint(user) {
  const response = await fetch(`${base}/demo/token?user=${encodeURIComponent(user)}`);
  assert.equal(response.status, 200, 'demo token');
  return (await response.json()).token;
}

/** One heartbeat from the user of `token`, in `module`. */
async function beat(token, module, extra = {}) {
  const response = await fetch(`${base}/api/stats/heartbeat`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ module, ...extra }),
  });
  assert.equal(response.status, 200, `heartbeat in ${module}: ${await response.text()}`);
}

/**
 * A page in a new browser context, with `token` as the site's login
 * (localStorage.token) when given. Console errors and page errors are
 * collected, except "Failed to load resource" for the HTTP answers the test
 * expects (`expected`: [status, path prefix] pairs, and the history's 404
 * where the endpoint is missing), which Chromium logs as console errors
 * whatever the page does.
 */
async function open({ token = null, viewport = { width: 1280, height: 800 }, expected = [] } = {}) {
  if (historyStatus === 404) expected = [...expected, [404, '/api/admin/history']];
  const context = await browser.newContext({ viewport });
  if (token) await context.addInitScript((t) => localStorage.setItem('token', t), token);
  const page = await context.newPage();
  const errors = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const url = msg.location()?.url ?? '';
    const allowed = expected.some(([status, path]) => msg.text().includes(`status of ${status}`)
      && url.startsWith(`${base}${path}`));
    if (!allowed) errors.push(`console: ${msg.text()} (${url})`);
  });
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  await page.goto(`${base}/admin`);
  return { context, page, errors };
}

const count = (page, module, field) => page.textContent(`.module-card[data-module="${module}"] [data-count="${field}"]`);

/** Waits until the module's card shows `value` for `field`. */
async function expectCount(page, module, field, value, why) {
  try {
    await page.waitForFunction(
      ([m, f, v]) => document.querySelector(`.module-card[data-module="${m}"] [data-count="${f}"]`)?.textContent === v,
      [module, field, String(value)],
      { timeout: CHANGE_WITHIN_MS, polling: 50 },
    );
  } catch {
    assert.fail(`${why}: expected ${module} ${field} = ${value} within ${CHANGE_WITHIN_MS} ms, saw ${await count(page, module, field).catch(() => 'no card')}`);
  }
}

/** User ids in the session list, as shown. */
const listedUsers = (page) => page.$$eval('#sessions-body tr .user', (nodes) => nodes.map((n) => n.textContent));

test('an admin sees live counts, the history chart and the live sessions', { skip }, async () => {
  // The history endpoint may not exist in this build: then the page says so
  // and the test checks everything else.
  // The service has the history endpoint: the chart checks must run. (Set
  // PRESENCE_HISTORY_OPTIONAL=1 to try the page against an older build.)
  if (process.env.PRESENCE_HISTORY_OPTIONAL === '1') {
    assert.ok([200, 404].includes(historyStatus), `history answered ${historyStatus}`);
  } else {
    assert.equal(historyStatus, 200, 'GET /api/admin/history answers 200');
  }

  const { context, page, errors } = await open({ token: adminToken });
  await page.waitForSelector('#dashboard:not([hidden])', { timeout: 5000 });
  await expectCount(page, 'procurement', 'activeNow', 0, 'nobody is in a module yet');
  await expectCount(page, 'innovation', 'activeNow', 0, 'nobody is in a module yet');

  // Two users start working: the counts follow within 2 s (SSE).
  const alice = await mint('alice');
  const bob = await mint('bob');
  await beat(alice, 'pms', { clientId: 'tab-1', page: '/requests/123', resource: 'request:123' });
  await expectCount(page, 'procurement', 'activeNow', 1, 'alice entered procurement');
  await beat(bob, 'ih');
  await expectCount(page, 'innovation', 'activeNow', 1, 'bob entered innovation');
  assert.equal(await count(page, 'procurement', 'today'), '1');
  assert.equal(await count(page, 'innovation', 'totalUsers'), '1');

  // Both appear in the session list, with what alice is looking at.
  await page.waitForFunction(() => {
    const users = [...document.querySelectorAll('#sessions-body tr .user')].map((n) => n.textContent);
    return users.includes('alice') && users.includes('bob');
  }, null, { timeout: LIST_WITHIN_MS });
  const aliceRow = await page.textContent('#sessions-body tr[data-user="alice"]');
  for (const text of ['pms', '/requests/123', 'request:123', 'tab-1']) assert.ok(aliceRow.includes(text), `alice's row shows ${text}: ${aliceRow}`);

  // The module filter works on the page shown, and says so.
  await page.selectOption('#module-filter', 'pms');
  assert.deepEqual(await listedUsers(page), ['alice']);
  assert.match(await page.textContent('#sessions-note'), /Filtered by module pms: 1 of 2/);
  await page.selectOption('#module-filter', '');
  assert.ok(await page.isHidden('#sessions-note'), 'no filter note without a filter');

  // The chart: drawn from history when the endpoint exists, else a clear note.
  if (historyStatus === 200) {
    await page.waitForSelector('#chart svg[data-chart="1h"]', { timeout: 5000 });
    const modules = Object.keys(history.modules);
    assert.deepEqual(await page.$$eval('#chart-legend li', (items) => items.length), modules.length, 'one legend entry per module');
    const withSamples = modules.filter((m) => history.modules[m].samples.length > 0);
    if (withSamples.length) {
      // Every module with samples has its line (or, with one sample, its dot).
      await page.waitForFunction((n) => document.querySelectorAll('#chart svg .series, #chart svg .dot.last').length >= n,
        withSamples.length, { timeout: 5000 });
    }
    assert.match(await page.textContent('.module-card[data-module="procurement"] [data-stat="peak"]'), /\d/);
    await page.waitForSelector('#distribution li[data-module="procurement"]');
    // The window buttons load the other windows.
    await page.click('[data-window="6h"]');
    await page.waitForSelector('#chart svg[data-chart="6h"]', { timeout: 5000 });
    await page.click('[data-window="1h"]');
    await page.waitForSelector('#chart svg[data-chart="1h"]', { timeout: 5000 });
  } else {
    await page.waitForFunction(() => document.querySelector('#chart').textContent.includes('History not available'),
      null, { timeout: 5000 });
    // The distribution falls back to the live counts.
    await page.waitForFunction(() => document.querySelector('#distribution li[data-module="procurement"] b')?.textContent === '50 %',
      null, { timeout: 5000 });
  }

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), animations: 'disabled' });

  // Paging: with 10 sessions a page, 12 sessions make two pages.
  const others = await Promise.all(Array.from({ length: 10 }, (_, i) => mint(`user-${String(i).padStart(2, '0')}`)));
  await Promise.all(others.map((token, i) => beat(token, i % 2 ? 'pms' : 'ih')));
  await page.selectOption('#page-size', '10');
  await page.waitForFunction(() => document.querySelectorAll('#sessions-body tr').length === 10
    && !document.querySelector('#next-page').disabled, null, { timeout: LIST_WITHIN_MS });
  const firstPage = await listedUsers(page);
  assert.ok(await page.isDisabled('#prev-page'), 'no previous page on the first page');
  await page.click('#next-page');
  await page.waitForFunction(() => document.querySelector('#page-label').textContent === 'Page 2'
    && document.querySelectorAll('#sessions-body tr').length === 2, null, { timeout: 5000 });
  const secondPage = await listedUsers(page);
  assert.equal(new Set([...firstPage, ...secondPage]).size, 12, 'two pages, every session once');
  assert.ok(await page.isDisabled('#next-page'), 'the last page has no next');
  await page.click('#prev-page');
  await page.waitForFunction(() => document.querySelector('#page-label').textContent === 'Page 1'
    && document.querySelectorAll('#sessions-body tr').length === 10, null, { timeout: 5000 });
  await page.selectOption('#page-size', '25');
  await page.waitForFunction(() => document.querySelectorAll('#sessions-body tr').length === 12, null, { timeout: 5000 });

  // Phone width: everything fits, nothing scrolls sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300); // the chart redraws at the new width
  const overflow = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: innerWidth }));
  assert.ok(overflow.scroll <= overflow.inner, `no horizontal scrolling at 390 px: ${JSON.stringify(overflow)}`);
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true, animations: 'disabled' });

  assert.deepEqual(errors, [], 'no console errors');
  await context.close();
});

test('a non-admin token gets a clear "not an admin" message', { skip }, async () => {
  // The site's login is a plain user's token: 403 from the admin API.
  const { context, page, errors } = await open({ token: await mint('eve'), expected: [[403, '/api/admin/']] });
  await page.waitForSelector('#auth-message[data-reason="forbidden"]', { timeout: 5000 });
  assert.match(await page.textContent('#gate-title'), /not an admin token/);
  assert.match(await page.textContent('#auth-message'), /admin role/);
  assert.ok(await page.isHidden('#dashboard'), 'no dashboard');
  assert.ok(await page.isVisible('#token-input'), 'a field to paste an admin token');

  // Pasting the admin token opens the dashboard (kept in this tab only).
  await page.fill('#token-input', adminToken);
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('#dashboard:not([hidden])', { timeout: 5000 });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('presence.adminToken')), adminToken);
  assert.deepEqual(errors, [], 'no console errors');
  await context.close();
});

test('without a token the page asks for one; a bad one is "invalid or expired"', { skip }, async () => {
  const { context, page, errors } = await open({ expected: [[401, '/api/admin/']] });
  await page.waitForSelector('#auth-message[data-reason="none"]', { timeout: 5000 });
  await page.fill('#token-input', 'not-a-token');
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('#auth-message[data-reason="invalid"]', { timeout: 5000 });
  assert.match(await page.textContent('#gate-title'), /invalid or expired/i);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('presence.adminToken')), null, 'a refused token is not kept');
  assert.deepEqual(errors, [], 'no console errors');
  await context.close();
});
