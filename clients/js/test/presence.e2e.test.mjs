// Presence you can see, end to end in real headless Chromium against the
// release binary in demo mode: alice and bob, each in a browser context of
// their own, open request:101 on the demo page; each sees the other listed
// under the name from their token's profile, active. Bob switches to another
// tab, so his page really becomes hidden (document.visibilityState, no
// faking: see launchChromiumWithTabs in support.mjs), and alice sees him idle
// within one heartbeat plus 2 s; he comes back and she sees him active.
// Then input: a user who leaves the page untouched for idleAfterMs shows
// idle, and a mouse move or a key press makes them active again.
//
// That needs both halves: the client sending the state at once when the tab
// hides and shows, and the service recording it and answering the viewers
// endpoint's version-2 shape (state, profile).
//
// Needs /usr/bin/chromium (Debian's `chromium`) and `npm ci` in clients/js.
// Without Chromium a local run skips with a notice; with CI=true it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { ARTIFACTS, launchChromiumWithTabs, serviceAndBrowser, signInOnDemo, skipReason } from './support.mjs';

// A short cadence so that the test runs in seconds; the service adds up to
// 10% jitter to it.
const HEARTBEAT_MS = 2000;
const WITHIN_MS = HEARTBEAT_MS * 1.1 + 2000;
// A change less than 5 s after the previous change's beat waits for the
// next regular beat (or the end of those 5 s): one heartbeat, then up to
// 2.5 s for the change to reach the demo page (its presence stream; it
// polled every 2.5 s before), and 1 s of slack for a timer set
// while the page was hidden (Chromium throttles those to wake-ups once a
// second).
const NEXT_CHANGE_WITHIN_MS = HEARTBEAT_MS * 1.1 + 2500 + 1000;
const RESOURCE = 'request:101';
const skip = skipReason();
const running = serviceAndBrowser({
  skip,
  env: {
    HEARTBEAT_INTERVAL: `${HEARTBEAT_MS}ms`,
    // Two beats and a viewers poll every 2 s per user would empty the
    // default per-user burst within a minute.
    RATE_LIMIT: '1000,10ms',
  },
  launch: launchChromiumWithTabs,
});

/**
 * Opens the demo page (`query` added to its address) in `context` as `name`
 * with `resource` open, collecting console errors.
 */
async function openAs(context, name, errors, { resource = RESOURCE, query = '' } = {}) {
  const page = await context.newPage();
  await signInOnDemo(page, running.url, name, errors, query);
  await page.click(`[data-resource="${resource}"]`);
  return page;
}

const visibility = (page) => page.evaluate(() => document.visibilityState);

/** Waits (briefly: the renderer hears of it a moment later) until `page` is `state`. */
async function expectVisibility(page, state, why) {
  try {
    // Interval polling: a hidden page gets no animation frames.
    await page.waitForFunction((s) => document.visibilityState === s, state, { timeout: 3000, polling: 50 });
  } catch {
    assert.fail(`${why}: expected the page ${state}, it is ${await visibility(page)}`);
  }
}

/** What `watcher` shows for `user` in the viewers list: [name, where the name came from, state]. */
const entry = (watcher, user) => watcher.evaluate((u) => {
  const item = [...document.querySelectorAll('#viewers .viewer')].find((li) => li.dataset.user === u);
  if (!item) return null;
  const name = item.querySelector('.name');
  return [name.textContent, name.dataset.from, item.querySelector('.state').textContent];
}, user);

/** Waits until `watcher` lists `user` under their profile name in `state`; resolves with the time it took. */
async function expectViewer(watcher, user, state, why, timeout = WITHIN_MS) {
  const started = Date.now();
  try {
    await watcher.waitForFunction(([u, s]) => {
      const item = [...document.querySelectorAll('#viewers .viewer')].find((li) => li.dataset.user === u);
      const name = item?.querySelector('.name');
      return name?.textContent === u && name.dataset.from === 'profile'
        && item.querySelector('.state').textContent === s;
    }, [user, state], { timeout, polling: 50 });
  } catch {
    assert.fail(`${why}: expected ${user} (name from the profile) ${state} within ${timeout} ms,`
      + ` saw ${JSON.stringify(await entry(watcher, user))}`);
  }
  return Date.now() - started;
}

test('two users on one request see each other by name, and idle while a tab is hidden', { skip }, async (t) => {
  const errors = [];
  // Alice in a context of her own (Playwright's defaults: always visible);
  // bob in the default context, where a page hides when another tab of the
  // window comes to the front.
  const alice = await openAs(await running.browser.newContext(), 'alice', errors);
  const bobContext = running.browser.contexts()[0];
  const bob = await openAs(bobContext, 'bob', errors);
  await bob.bringToFront();
  await expectVisibility(bob, 'visible', 'bob\'s tab is in front');

  await expectViewer(alice, 'bob', 'active', 'alice sees bob', 10000);
  await expectViewer(bob, 'alice', 'active', 'bob sees alice', 10000);
  await expectViewer(alice, 'alice', 'active', 'alice sees herself too', 10000);

  // Bob switches to another tab: his page is hidden for real.
  const elsewhere = await bobContext.newPage();
  await elsewhere.bringToFront();
  await expectVisibility(bob, 'hidden', 'bringing another tab to the front hides bob\'s page');
  const tookIdle = await expectViewer(alice, 'bob', 'idle', 'bob\'s tab is hidden');
  await expectViewer(alice, 'alice', 'active', 'alice is still active');
  // The module card counts him too: both present in Procurement, one idle.
  const card = (count) => `#card-pms [data-count=${count}]`;
  await alice.waitForFunction((c) => document.querySelector(c[0]).textContent === '2'
    && document.querySelector(c[1]).textContent === '1', [card('activeNow'), card('idleNow')], { timeout: WITHIN_MS })
    .catch(async () => assert.fail(`alice's Procurement card: expected 2 present, 1 idle, saw `
      + `${await alice.textContent(card('activeNow'))}, ${await alice.textContent(card('idleNow'))}`));

  mkdirSync(ARTIFACTS, { recursive: true });
  await alice.screenshot({ path: join(ARTIFACTS, 'presence.png'), fullPage: true });

  // Back to bob's tab.
  await bob.bringToFront();
  await expectVisibility(bob, 'visible', 'bob is back on his tab');
  const tookActive = await expectViewer(alice, 'bob', 'active', 'bob is back', NEXT_CHANGE_WITHIN_MS);
  await elsewhere.close();
  t.diagnostic(`alice saw bob idle after ${tookIdle} ms, active again after ${tookActive} ms`);

  assert.deepEqual(errors, [], 'no console errors');
});

test('a page left untouched shows idle, and a mouse move or a key press makes it active again', { skip }, async () => {
  const errors = [];
  const idleAfterMs = 3000;
  const options = { resource: 'request:102', query: `?idleAfterMs=${idleAfterMs}` };
  const carol = await openAs(await running.browser.newContext(), 'carol', errors, options);
  const dave = await openAs(await running.browser.newContext(), 'dave', errors, options);
  await dave.mouse.move(10, 10);

  await expectViewer(carol, 'dave', 'idle', 'dave has not touched his page', idleAfterMs + WITHIN_MS);
  assert.equal(await visibility(dave), 'visible', 'idle without being hidden');
  await dave.mouse.move(200, 150);
  await expectViewer(carol, 'dave', 'active', 'dave moved the mouse', NEXT_CHANGE_WITHIN_MS);
  await expectViewer(carol, 'dave', 'idle', 'dave stopped again', idleAfterMs + NEXT_CHANGE_WITHIN_MS);
  await dave.keyboard.press('Shift');
  await expectViewer(carol, 'dave', 'active', 'dave pressed a key', NEXT_CHANGE_WITHIN_MS);

  assert.deepEqual(errors, [], 'no console errors');
});
