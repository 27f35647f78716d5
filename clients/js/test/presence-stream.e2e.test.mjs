// Viewers live, on one stream per page, end to end in real headless Chromium
// against the release binary in demo mode: three browser contexts; alice and
// bob open request:101 on the demo page, carol opens request:102, and carol's
// page subscribes to both requests with subscribePresence (one EventSource).
// Carol's page sees each join, bob turning idle, and alice leaving when she
// closes her tab (the pagehide DELETE), each within 2 s of the request that
// made the change.
//
// Needs /usr/bin/chromium (Debian's `chromium`) and `npm ci` in clients/js.
// Without Chromium a local run skips with a notice; with CI=true it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { serviceAndBrowser, signInOnDemo, skipReason } from './support.mjs';

const WITHIN_MS = 2000;
const skip = skipReason();
const running = serviceAndBrowser({ skip, env: { RATE_LIMIT: '1000,10ms' } });

async function openAs(name, resource, errors, query = '') {
  const context = await running.browser.newContext();
  const page = await context.newPage();
  await signInOnDemo(page, running.url, name, errors, query);
  return { page, open: () => page.click(`[data-resource="${resource}"]`) };
}

/** The heartbeat request of `page` that `match` accepts (its JSON body), once sent. */
const heartbeat = (page, match) => page.waitForRequest((r) => r.method() === 'POST'
  && r.url().endsWith('/api/stats/heartbeat') && match(JSON.parse(r.postData() ?? '{}')), { timeout: 20000 });

/**
 * Waits until `watcher`'s subscription shows `user` on `resource` in `state`
 * (`null`: not there); resolves with the time since `since`.
 */
async function expectSeen(watcher, resource, user, state, since, why) {
  try {
    await watcher.waitForFunction(([r, u, s]) => {
      const doc = window.presenceSeen?.[r];
      const viewer = doc?.viewers.find((v) => v.userId === u);
      return s === null ? Boolean(doc) && !viewer : viewer?.state === s;
    }, [resource, user, state], { timeout: WITHIN_MS + 3000, polling: 20 });
  } catch {
    const seen = await watcher.evaluate((r) => window.presenceSeen?.[r], resource);
    assert.fail(`${why}: expected ${user} ${state ?? 'gone'} on ${resource}, saw ${JSON.stringify(seen)}`);
  }
  const took = Date.now() - since;
  assert.ok(took <= WITHIN_MS, `${why}: took ${took} ms, more than ${WITHIN_MS}`);
  return took;
}

test('a page subscribed to two requests sees each join, idle and leave within 2 s', { skip }, async (t) => {
  const errors = [];
  const carol = await openAs('carol', 'request:102', errors);
  await carol.open();
  // One subscription for both requests, as a page listing requests would
  // make; the documents it receives are kept for the test to read.
  await carol.page.evaluate(async () => {
    const { createHeartbeatService } = await import('/demo/presence-client.js');
    window.presenceSeen = {};
    window.presenceStreams = 0;
    const Counting = class extends window.EventSource {
      constructor(...args) { super(...args); window.presenceStreams += 1; }
    };
    const service = createHeartbeatService({
      getToken: () => sessionStorage.getItem('presence.demoToken'),
      EventSource: Counting,
    });
    service.subscribePresence(['request:101', 'request:102'], (doc) => { window.presenceSeen[doc.resource] = doc; });
  });
  await expectSeen(carol.page, 'request:102', 'carol', 'active', Date.now(), 'carol sees herself');

  const took = {};
  const alice = await openAs('alice', 'request:101', errors);
  let beat = heartbeat(alice.page, (b) => b.resource === 'request:101');
  await alice.open();
  await beat;
  took.aliceJoins = await expectSeen(carol.page, 'request:101', 'alice', 'active', Date.now(), 'alice joins');

  // Bob's page turns idle after 3 s without input, and says so at once.
  const bob = await openAs('bob', 'request:101', errors, '?idleAfterMs=3000');
  beat = heartbeat(bob.page, (b) => b.resource === 'request:101');
  await bob.open();
  await beat;
  took.bobJoins = await expectSeen(carol.page, 'request:101', 'bob', 'active', Date.now(), 'bob joins');
  await bob.page.waitForRequest((r) => r.method() === 'POST' && JSON.parse(r.postData() ?? '{}').state === 'idle',
    { timeout: 15000 });
  took.bobIdle = await expectSeen(carol.page, 'request:101', 'bob', 'idle', Date.now(), 'bob is idle');

  // Alice closes her tab: the pagehide DELETE ends her session.
  const closed = Date.now();
  await alice.page.close({ runBeforeUnload: true });
  took.aliceLeaves = await expectSeen(carol.page, 'request:101', 'alice', null, closed, 'alice closed her tab');
  assert.equal(await carol.page.evaluate(() => window.presenceStreams), 1, 'one EventSource for both requests');
  t.diagnostic(`carol saw (ms): ${JSON.stringify(took)}`);
  assert.deepEqual(errors, [], 'no console errors');
});
