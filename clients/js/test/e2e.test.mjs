// End to end in real headless Chromium against the release binary in demo
// mode: users A and B in two browser contexts replay the original scenario
// while a third page, subscribed through subscribeModuleStats, sees every
// count change within 2 s; closing A's tab drops A at once.
//
// Needs /usr/bin/chromium (Debian's `chromium`) and `npm ci` in clients/js.
// Without Chromium a local run skips with a notice; with CI=true it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { ARTIFACTS, serviceAndBrowser, signInOnDemo, skipReason } from './support.mjs';

const CHANGE_WITHIN_MS = 2000;
const skip = skipReason();
const running = serviceAndBrowser({ skip });

/** Opens the demo page in a new context as `name`, collecting console errors. */
async function openAs(name, errors) {
  const context = await running.browser.newContext();
  const page = await context.newPage();
  await signInOnDemo(page, running.url, name, errors);
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
