// Unit tests of presence-client.js: timing, back-off, sessions, activity
// state and resource, and the stats subscription, with fake timers (and a
// fake clock) and a fake fetch/EventSource.
import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';

import { createHeartbeatService } from '../presence-client.js';

class MemoryStorage {
  constructor() { this.map = new Map(); }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
}

class FakeTarget {
  constructor() {
    this.listeners = {};
    this.options = {};
    this.location = { pathname: '/requests/123' };
    this.document = { visibilityState: 'visible' };
  }
  addEventListener(type, fn, options) { (this.listeners[type] ??= new Set()).add(fn); this.options[type] = options; }
  removeEventListener(type, fn) { this.listeners[type]?.delete(fn); }
  dispatch(type, event = {}) { for (const fn of this.listeners[type] ?? []) fn(event); }
  /** The tab becomes hidden or visible, as when the user switches tabs. */
  show(visible) {
    this.document.visibilityState = visible ? 'visible' : 'hidden';
    this.dispatch('visibilitychange');
  }
}

function reply(status, body = {}, headers = {}) {
  return {
    ok: status >= 200 && status < 300,
    status,
    headers: { get: (name) => headers[name] ?? headers[name.toLowerCase()] ?? null },
    json: async () => body,
  };
}

/** A fake fetch answering from a queue (default 200 with nextHeartbeatMs). */
function fakeFetch() {
  const calls = [];
  const answers = [];
  const fn = async (url, init = {}) => {
    calls.push({ url, init, body: init.body ? JSON.parse(init.body) : undefined });
    const next = answers.shift();
    if (next instanceof Error) throw next;
    return next ?? reply(200, { success: true, nextHeartbeatMs: 40000 });
  };
  return { fn, calls, answers, beats: () => calls.filter((c) => c.init.method === 'POST') };
}

// Lets pending promise callbacks (the fetch chain) run.
const settle = async () => { for (let i = 0; i < 10; i += 1) await Promise.resolve(); };

let net;
let storage;
let target;
let errors;

// The tests of timing and sessions keep the tab active (no idle timer); the
// activity tests pass their own idleAfterMs.
function service(extra = {}) {
  return createHeartbeatService({
    baseUrl: 'https://presence.test',
    getToken: () => 'tok',
    idleAfterMs: Infinity,
    fetch: net.fn,
    storage,
    target,
    EventSource: null,
    onError: (e) => errors.push(e),
    ...extra,
  });
}

// Timers the client has set and not yet seen fire or cleared.
let pending;
let mockedSet;
let mockedClear;

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  pending = new Set();
  mockedSet = globalThis.setTimeout;
  mockedClear = globalThis.clearTimeout;
  globalThis.setTimeout = (fn, ms, ...args) => {
    const id = mockedSet(() => { pending.delete(id); fn(...args); }, ms);
    pending.add(id);
    return id;
  };
  globalThis.clearTimeout = (id) => { pending.delete(id); mockedClear(id); };
  net = fakeFetch();
  storage = new MemoryStorage();
  target = new FakeTarget();
  errors = [];
});

afterEach(() => {
  globalThis.setTimeout = mockedSet;
  globalThis.clearTimeout = mockedClear;
  mock.timers.reset();
});

test('start beats at once with module, clientId and page', async () => {
  const s = service();
  s.startHeartbeat('pms');
  await settle();
  assert.equal(net.beats().length, 1);
  const [beat] = net.beats();
  assert.equal(beat.url, 'https://presence.test/api/stats/heartbeat');
  assert.equal(beat.init.headers.Authorization, 'Bearer tok');
  assert.equal(beat.body.module, 'pms');
  assert.match(beat.body.clientId, /^[A-Za-z0-9_-]{1,64}$/);
  assert.equal(beat.body.page, '/requests/123');
  assert.equal(s.getCurrentModule(), 'pms');
});

test('the next beat comes when nextHeartbeatMs says, else after intervalMs', async () => {
  const s = service({ intervalMs: 45000 });
  s.startHeartbeat('pms');
  await settle();
  mock.timers.tick(39999);
  await settle();
  assert.equal(net.beats().length, 1, 'not before nextHeartbeatMs');
  net.answers.push(reply(200, { success: true })); // no nextHeartbeatMs this time
  mock.timers.tick(1);
  await settle();
  assert.equal(net.beats().length, 2);
  mock.timers.tick(44999);
  await settle();
  assert.equal(net.beats().length, 2, 'intervalMs when the server says nothing');
  mock.timers.tick(1);
  await settle();
  assert.equal(net.beats().length, 3);
});

test('switching module beats for the new one at once and keeps one timer', async () => {
  const s = service();
  s.startHeartbeat('pms');
  await settle();
  s.startHeartbeat('ih');
  await settle();
  assert.deepEqual(net.beats().map((b) => b.body.module), ['pms', 'ih']);
  assert.equal(net.beats()[0].body.clientId, net.beats()[1].body.clientId, 'the same tab session moves');
  mock.timers.tick(40000);
  await settle();
  assert.deepEqual(net.beats().map((b) => b.body.module), ['pms', 'ih', 'ih'], 'no timer left for pms');
  s.startHeartbeat('ih');
  await settle();
  assert.equal(net.beats().length, 3, 'starting the current module again does nothing');
});

test('one clientId per tab: kept in sessionStorage, different in another tab', async () => {
  const first = service();
  first.startHeartbeat('pms');
  await settle();
  const again = service(); // same tab (same sessionStorage), e.g. after a reload
  again.startHeartbeat('pms');
  await settle();
  storage = new MemoryStorage(); // another tab
  const other = service();
  other.startHeartbeat('ih');
  await settle();
  const ids = net.beats().map((b) => b.body.clientId);
  assert.equal(ids[0], ids[1]);
  assert.notEqual(ids[0], ids[2]);
});

test('stop ends the session with DELETE keepalive and leaves no timer running', async () => {
  const s = service();
  s.startHeartbeat('pms');
  await settle();
  const clientId = net.beats()[0].body.clientId;
  s.stopHeartbeat();
  await settle();
  const leave = net.calls.at(-1);
  assert.equal(leave.init.method, 'DELETE');
  assert.equal(leave.init.keepalive, true);
  assert.equal(leave.url, `https://presence.test/api/stats/heartbeat?clientId=${clientId}`);
  assert.equal(s.getCurrentModule(), null);
  assert.equal(pending.size, 0, 'no timer left running');
  mock.timers.tick(10 * 60 * 1000);
  await settle();
  assert.equal(net.beats().length, 1, 'no beat after stop');
  s.stopHeartbeat();
  assert.equal(net.calls.length, 2, 'stopping twice sends nothing more');
});

/** A fetch whose replies the test releases one by one. */
function heldFetch() {
  const calls = [];
  const fn = (url, init = {}) => new Promise((resolve) => {
    calls.push({ url, init, body: init.body ? JSON.parse(init.body) : undefined,
      release: (answer = reply(200, { nextHeartbeatMs: 40000 })) => resolve(answer) });
  });
  return { fn, calls };
}

test('stop then start: the POST waits for the DELETE, so the session is not ended after it began', async () => {
  const held = heldFetch();
  const s = service({ fetch: held.fn });
  s.startHeartbeat('pms');
  await settle();
  held.calls[0].release();
  await settle();
  s.stopHeartbeat(); // e.g. React StrictMode: unmount...
  s.startHeartbeat('pms'); // ...and mount again
  await settle();
  assert.deepEqual(held.calls.map((c) => c.init.method), ['POST', 'DELETE'], 'the POST is not sent yet');
  held.calls[1].release(reply(204));
  await settle();
  assert.deepEqual(held.calls.map((c) => c.init.method), ['POST', 'DELETE', 'POST'], 'then it follows');
});

test('switching during an in-flight beat sends the new module after it and keeps one timer', async () => {
  const held = heldFetch();
  const s = service({ fetch: held.fn });
  s.startHeartbeat('pms');
  await settle();
  s.startHeartbeat('ih'); // while pms is in flight
  await settle();
  assert.equal(held.calls.length, 1, 'ih waits for the pms reply');
  held.calls[0].release();
  await settle();
  assert.deepEqual(held.calls.map((c) => c.body.module), ['pms', 'ih']);
  held.calls[1].release();
  await settle();
  assert.equal(pending.size, 1, 'one timer: the next ih beat');
  assert.equal(s.getCurrentModule(), 'ih');
});

test('starting the current module while its first beat is in flight sends nothing more', async () => {
  const held = heldFetch();
  const s = service({ fetch: held.fn });
  s.startHeartbeat('pms');
  s.startHeartbeat('pms');
  await settle();
  held.calls[0]?.release();
  await settle();
  assert.equal(held.calls.length, 1);
});

test('a reply arriving after stop schedules nothing', async () => {
  const held = heldFetch();
  const s = service({ fetch: held.fn });
  s.startHeartbeat('pms');
  await settle();
  s.stopHeartbeat();
  held.calls[0].release(reply(200, { nextHeartbeatMs: 1000 }));
  await settle();
  held.calls[1].release(reply(204));
  await settle();
  assert.equal(pending.size, 0, 'no timer left running');
  mock.timers.tick(60000);
  await settle();
  assert.equal(held.calls.filter((c) => c.init.method === 'POST').length, 1);
});

test('a throwing getToken is reported and the heartbeat goes on', async () => {
  let calls = 0;
  const s = service({ getToken: () => { calls += 1; if (calls === 1) throw new Error('storage blocked'); return 'tok'; } });
  s.startHeartbeat('pms');
  await settle();
  assert.equal(net.calls.length, 0);
  assert.ok(errors.length >= 1);
  mock.timers.tick(45000);
  await settle();
  assert.equal(net.beats().length, 1, 'it tried again');
});

test('Retry-After: 0 is not a tight loop', async () => {
  net.answers.push(reply(503, {}, { 'Retry-After': '0' }), reply(503, {}, { 'Retry-After': '0' }));
  const s = service();
  s.startHeartbeat('pms');
  await settle();
  mock.timers.tick(999);
  await settle();
  assert.equal(net.beats().length, 1, 'waits the back-off, not 0 ms');
  mock.timers.tick(1);
  await settle();
  assert.equal(net.beats().length, 2);
});

test('429 honours Retry-After', async () => {
  net.answers.push(reply(429, {}, { 'Retry-After': '120' }));
  const s = service();
  s.startHeartbeat('pms');
  await settle();
  mock.timers.tick(119999);
  await settle();
  assert.equal(net.beats().length, 1, 'not before Retry-After');
  mock.timers.tick(1);
  await settle();
  assert.equal(net.beats().length, 2);
  assert.equal(errors.length, 1, 'reported to onError, not thrown');
});

test('503 and network errors back off 1 s, 2 s, 4 s up to the interval, then recover', async () => {
  net.answers.push(reply(503), reply(503), new TypeError('network down'));
  const s = service({ intervalMs: 45000 });
  s.startHeartbeat('pms');
  await settle();
  for (const wait of [1000, 2000, 4000]) {
    const before = net.beats().length;
    mock.timers.tick(wait - 1);
    await settle();
    assert.equal(net.beats().length, before, `not before ${wait} ms`);
    mock.timers.tick(1);
    await settle();
    assert.equal(net.beats().length, before + 1, `after ${wait} ms`);
  }
  // The fourth beat succeeded: back to the server's cadence.
  mock.timers.tick(40000);
  await settle();
  assert.equal(net.beats().length, 5);
  assert.equal(errors.length, 3);
});

test('page hide ends the session at once; coming back from the bfcache beats again', async () => {
  const s = service();
  s.startHeartbeat('pms');
  await settle();
  target.dispatch('pagehide', { persisted: true });
  await settle();
  assert.equal(net.calls.at(-1).init.method, 'DELETE');
  assert.equal(net.calls.at(-1).init.keepalive, true);
  mock.timers.tick(60000);
  await settle();
  assert.equal(net.beats().length, 1, 'no beats while hidden');
  target.dispatch('pageshow', { persisted: true });
  await settle();
  assert.equal(net.beats().length, 2);
});

test('no token: nothing is sent, the error is reported, and it tries again later', async () => {
  let token = null;
  const s = service({ getToken: () => token });
  s.startHeartbeat('pms');
  await settle();
  assert.equal(net.calls.length, 0);
  assert.equal(errors.length, 1);
  token = 'late';
  mock.timers.tick(45000);
  await settle();
  assert.equal(net.beats().length, 1);
});

// Activity state and resource.

/**
 * Advances the fake clock a second at a time, letting the beats go out (a
 * beat's reply schedules the next one).
 */
async function wait(ms) {
  for (let left = ms; left > 0; left -= 1000) {
    mock.timers.tick(Math.min(left, 1000));
    await settle();
  }
}

const states = () => net.beats().map((b) => b.body.state);

/** A service with the default idleAfterMs that has sent its first beat. */
async function beating(extra = {}) {
  const s = service({ idleAfterMs: 60000, ...extra });
  s.startHeartbeat('pms');
  await settle();
  return s;
}

test('every beat carries the state, active while the tab is visible and used', async () => {
  const s = await beating();
  await wait(20000);
  target.dispatch('keydown');
  await wait(20000); // the next regular beat
  assert.deepEqual(states(), ['active', 'active']);
  assert.equal(s.getState(), 'active');
  assert.equal(net.beats()[0].body.resource, undefined, 'no resource until one is set');
});

test('idle after idleAfterMs without input, sent at once', async () => {
  net.answers.push(reply(200, { nextHeartbeatMs: 600000 })); // no regular beat in the way
  const s = await beating();
  await wait(59999);
  assert.deepEqual(states(), ['active']);
  await wait(1);
  assert.deepEqual(states(), ['active', 'idle'], 'the change is a heartbeat of its own');
  assert.equal(s.getState(), 'idle');
});

test('input postpones idle by idleAfterMs from the latest input', async () => {
  net.answers.push(reply(200, { nextHeartbeatMs: 600000 }));
  await beating();
  await wait(30000);
  target.dispatch('pointermove');
  await wait(50000); // 80 s after start, 50 s after the input
  assert.deepEqual(states(), ['active']);
  await wait(10000);
  assert.deepEqual(states(), ['active', 'idle']);
});

test('input makes the tab active again at once; a burst of mouse moves sends one beat', async () => {
  net.answers.push(reply(200, { nextHeartbeatMs: 600000 }), reply(200, { nextHeartbeatMs: 600000 }));
  const s = await beating();
  await wait(60000);
  assert.equal(s.getState(), 'idle');
  await wait(10000);
  for (let i = 0; i < 50; i += 1) target.dispatch('pointermove');
  target.dispatch('scroll');
  target.dispatch('keydown');
  await settle();
  assert.deepEqual(states(), ['active', 'idle', 'active']);
  await wait(4000);
  for (let i = 0; i < 50; i += 1) target.dispatch('pointermove');
  await wait(10000);
  assert.deepEqual(states(), ['active', 'idle', 'active'], 'input while active sends nothing');
});

test('input is heard passively, in the capture phase, and only while beating', async () => {
  const s = service({ idleAfterMs: 60000 });
  assert.equal(target.listeners.keydown, undefined, 'nothing before start');
  s.startHeartbeat('pms');
  await settle();
  for (const type of ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'scroll']) {
    assert.equal(target.listeners[type]?.size, 1, type);
    assert.deepEqual(target.options[type], { capture: true, passive: true }, type);
  }
  s.stopHeartbeat();
  await settle();
  assert.equal(target.listeners.pointermove.size, 0);
  assert.equal(target.listeners.visibilitychange.size, 0);
  assert.equal(pending.size, 0, 'no idle timer left running');
});

test('a hidden tab is idle at once; visible again, it is active at once', async () => {
  const s = await beating();
  await wait(1000);
  target.show(false);
  await settle();
  assert.deepEqual(states(), ['active', 'idle'], 'hidden: sent at once');
  assert.equal(s.getState(), 'idle');
  target.dispatch('pointermove'); // a hidden tab stays idle whatever it hears
  await wait(5000);
  assert.deepEqual(states(), ['active', 'idle']);
  target.show(true);
  await settle();
  assert.deepEqual(states(), ['active', 'idle', 'active'], 'visible: sent at once');
  // Visible again is a fresh start of the idle timer.
  await wait(59999);
  assert.equal(s.getState(), 'active');
});

test('a tab hidden for longer than idleAfterMs stays idle without extra beats', async () => {
  await beating();
  target.show(false);
  await settle();
  await wait(200000); // regular beats every 40 s
  assert.deepEqual(states(), ['active', 'idle', 'idle', 'idle', 'idle', 'idle', 'idle']);
});

test('starting in a hidden tab starts idle', async () => {
  target.document.visibilityState = 'hidden';
  await beating();
  assert.deepEqual(states(), ['idle']);
  target.show(true);
  await settle();
  assert.deepEqual(states(), ['idle', 'active']);
});

test('at most one change beat per 5 s; a change inside the window goes out when it ends, latest state wins', async () => {
  await beating();
  target.show(false); // t=0: sent at once
  await settle();
  assert.deepEqual(states(), ['active', 'idle']);
  await wait(1000);
  target.show(true); // t=1 s: inside the window
  await wait(1000);
  target.show(false); // t=2 s
  await wait(1000);
  target.show(true); // t=3 s: the latest
  await wait(1999);
  assert.deepEqual(states(), ['active', 'idle'], 'nothing before the window ends');
  await wait(1);
  assert.deepEqual(states(), ['active', 'idle', 'active'], 'one beat at t=5 s, with the latest state');
  // The window starts again with that beat.
  target.show(false);
  await wait(4999);
  assert.equal(net.beats().length, 3);
  await wait(1);
  assert.deepEqual(states(), ['active', 'idle', 'active', 'idle']);
});

test('a change undone inside the window sends nothing', async () => {
  await beating();
  target.show(false);
  await wait(1000);
  target.show(true);
  await wait(1000);
  target.show(false); // back to what the service already has
  await wait(10000);
  assert.deepEqual(states(), ['active', 'idle']);
});

test('a regular beat inside the window carries the change, so no extra beat follows', async () => {
  net.answers.push(reply(200, { nextHeartbeatMs: 40000 }), reply(200, { nextHeartbeatMs: 2000 }));
  await beating();
  target.show(false); // change beat at t=0; the next regular beat at t=2 s
  await settle();
  target.show(true); // t=0, inside the window
  await wait(2000);
  assert.deepEqual(states(), ['active', 'idle', 'active'], 'the regular beat at 2 s says active');
  await wait(3000);
  assert.equal(net.beats().length, 3, 'nothing more when the window ends');
});

test('while a failed beat waits for its retry, a change waits with it', async () => {
  net.answers.push(reply(503, {}, { 'Retry-After': '30' }));
  await beating();
  target.show(false);
  await wait(29999);
  assert.equal(net.beats().length, 1, 'no beat into the back-off');
  await wait(1);
  assert.deepEqual(states(), ['active', 'idle'], 'the retry carries the change');
});

test('after pagehide nothing is sent, even the visibilitychange that follows it', async () => {
  const s = await beating();
  target.dispatch('pagehide', { persisted: false });
  target.show(false); // Chromium's order when a tab closes
  await wait(60000);
  assert.deepEqual(net.calls.map((c) => c.init.method), ['POST', 'DELETE'], 'the DELETE stays the last word');
  s.setResource('request:1');
  await wait(60000);
  assert.equal(net.calls.length, 2);
});

test('back from the bfcache, the beat says active and carries the resource', async () => {
  const s = service({ idleAfterMs: 60000 });
  s.setResource('request:9');
  s.startHeartbeat('pms');
  await settle();
  target.dispatch('pagehide', { persisted: true });
  target.show(false);
  await wait(120000);
  target.document.visibilityState = 'visible';
  target.dispatch('pageshow', { persisted: true });
  await settle();
  const last = net.beats().at(-1);
  assert.equal(net.beats().length, 2);
  assert.equal(last.body.state, 'active');
  assert.equal(last.body.resource, 'request:9');
});

test('setResource: sent at once, carried by every beat, null clears it', async () => {
  const s = service();
  s.setResource('request:1'); // before start: carried by the first beat
  assert.equal(net.calls.length, 0, 'nothing is sent outside a module');
  s.startHeartbeat('pms');
  await settle();
  assert.equal(net.beats()[0].body.resource, 'request:1');
  await wait(6000);
  s.setResource('request:2');
  await settle();
  assert.equal(net.beats().length, 2, 'sent at once');
  assert.equal(net.beats()[1].body.resource, 'request:2');
  assert.equal(s.getResource(), 'request:2');
  await wait(40000);
  assert.equal(net.beats()[2].body.resource, 'request:2', 'regular beats carry it');
  s.setResource('request:2');
  await wait(6000);
  assert.equal(net.beats().length, 3, 'the same resource again sends nothing');
  s.setResource(null);
  await settle();
  assert.equal(net.beats().length, 4);
  assert.equal('resource' in net.beats()[3].body, false, 'null: no resource in the body');
  assert.equal(s.getResource(), null);
});

test('setResource shares the 5 s window: paging through requests sends the latest', async () => {
  const s = service();
  s.startHeartbeat('pms');
  await settle();
  for (let i = 1; i <= 10; i += 1) {
    s.setResource(`request:${i}`);
    await wait(300);
  }
  assert.deepEqual(net.beats().map((b) => b.body.resource), [undefined, 'request:1']);
  await wait(5000);
  assert.deepEqual(net.beats().map((b) => b.body.resource), [undefined, 'request:1', 'request:10']);
});

test('setResource refuses what the service would answer 400 to', () => {
  const s = service();
  for (const bad of ['', 'x'.repeat(129), 'a\nb', 42, undefined, {}]) {
    assert.throws(() => s.setResource(bad), TypeError, String(bad));
  }
  s.setResource('é'.repeat(128)); // characters, not bytes
  assert.equal(s.getResource(), 'é'.repeat(128));
});

test('without a target to hear input from, the state stays active', async () => {
  const s = service({ idleAfterMs: 1000, target: null });
  s.startHeartbeat('pms');
  await settle();
  await wait(100000);
  assert.ok(states().every((st) => st === 'active'));
  assert.equal(s.getState(), 'active');
});

class FakeEventSource {
  static last;
  constructor(url) { this.url = url; this.readyState = 0; this.listeners = {}; this.closed = false; FakeEventSource.last = this; }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  emit(type, event = {}) { for (const fn of this.listeners[type] ?? []) fn(event); }
  close() { this.closed = true; this.readyState = 2; }
}

/**
 * The open stream fails; it reconnects after 1 s with a fresh token, fails
 * again, reconnects after 2 s, and fails a third time in a row.
 */
function failStreamThreeTimes() {
  const first = FakeEventSource.last;
  first.emit('error');
  assert.equal(first.closed, true);
  mock.timers.tick(1000);
  const second = FakeEventSource.last;
  assert.notEqual(second, first, 'reconnected after 1 s');
  assert.notEqual(second.url, first.url, 'with a fresh token');
  second.emit('error');
  mock.timers.tick(2000);
  FakeEventSource.last.emit('error');
}

test('subscribeModuleStats delivers stream events and unsubscribes', async () => {
  const s = service({ EventSource: FakeEventSource });
  const seen = [];
  const unsubscribe = s.subscribeModuleStats((stats) => seen.push(stats));
  const es = FakeEventSource.last;
  assert.equal(es.url, 'https://presence.test/api/stats/stream?access_token=tok');
  es.emit('modules', { data: '{"procurement":{"activeNow":1,"today":1,"totalUsers":1},"timestamp":"t"}' });
  assert.equal(seen[0].procurement.activeNow, 1);
  unsubscribe();
  assert.equal(es.closed, true);
  es.emit('modules', { data: '{}' });
  assert.equal(seen.length, 1, 'nothing after unsubscribe');
});

test('a failed stream reconnects with a fresh token, then polls every 30 s, then tries the stream again', async () => {
  let tokenNo = 0;
  net.answers.push(reply(200, { procurement: { activeNow: 2 } }), reply(200, { procurement: { activeNow: 3 } }));
  const s = service({ EventSource: FakeEventSource, getToken: () => `tok${++tokenNo}` });
  const seen = [];
  const unsubscribe = s.subscribeModuleStats((stats) => seen.push(stats.procurement.activeNow));
  failStreamThreeTimes();
  await settle();
  assert.deepEqual(seen, [2], 'polled at once');
  assert.equal(net.calls[0].url, 'https://presence.test/api/stats/modules');
  mock.timers.tick(30000);
  await settle();
  assert.deepEqual(seen, [2, 3], 'and every 30 s');
  const polling = FakeEventSource.last;
  mock.timers.tick(5 * 60 * 1000 - 30000);
  await settle();
  assert.notEqual(FakeEventSource.last, polling, 'the stream is tried again after 5 min');
  FakeEventSource.last.emit('modules', { data: '{"procurement":{"activeNow":4}}' });
  assert.deepEqual(seen.at(-1), 4);
  const calls = net.calls.length;
  mock.timers.tick(120000);
  await settle();
  assert.equal(net.calls.length, calls, 'no polling once the stream is back');
  unsubscribe();
  assert.equal(FakeEventSource.last.closed, true);
  assert.equal(pending.size, 0, 'nothing left running after unsubscribe');
});

const viewers = (resource, ...users) => ({
  resource,
  count: users.length,
  viewers: users.map((userId) => ({ userId, state: 'active', since: 't', lastSeen: 't' })),
  timestamp: 't',
});
const presenceEvent = (doc) => ({ data: JSON.stringify(doc) });

test('subscribePresence: one EventSource for every subscription of the page, reopened when the set changes', async () => {
  let opened = 0;
  class Counting extends FakeEventSource {
    constructor(url) { super(url); opened += 1; }
  }
  const s = service({ EventSource: Counting });
  const one = [];
  const both = [];
  const offOne = s.subscribePresence(['request:1'], (doc) => one.push(doc));
  const offBoth = s.subscribePresence(['request:1', 'a,b'], (doc) => both.push(doc));
  await settle();
  assert.equal(opened, 1, 'two subscriptions in one task open one stream');
  const es = FakeEventSource.last;
  assert.equal(es.url,
    'https://presence.test/api/presence/stream?resources=request%3A1,a%2Cb&access_token=tok');
  es.emit('presence', presenceEvent(viewers('request:1', 'ann')));
  es.emit('presence', presenceEvent(viewers('a,b', 'bob')));
  assert.deepEqual(one.map((d) => d.viewers[0].userId), ['ann']);
  assert.deepEqual(both.map((d) => d.resource), ['request:1', 'a,b']);

  // A later subscriber gets what is known at once, on the same stream.
  const late = [];
  const offLate = s.subscribePresence(['a,b'], (doc) => late.push(doc));
  await settle();
  assert.equal(opened, 1, 'the set did not change');
  assert.deepEqual(late.map((d) => d.viewers[0].userId), ['bob']);

  offBoth();
  await settle();
  assert.equal(opened, 1, 'a,b is still wanted');
  offLate();
  await settle();
  assert.equal(es.closed, true, 'the set changed: reopened');
  assert.equal(FakeEventSource.last.url,
    'https://presence.test/api/presence/stream?resources=request%3A1&access_token=tok');
  offOne();
  await settle();
  assert.equal(FakeEventSource.last.closed, true, 'nothing wanted: closed');
  assert.equal(pending.size, 0, 'nothing left running');
});

test('subscribePresence reconnects with a fresh token, falls back to polling the GET, then tries the stream again', async () => {
  let tokenNo = 0;
  net.answers.push(reply(200, viewers('request:1', 'ann')), reply(200, viewers('request:1')));
  const s = service({ EventSource: FakeEventSource, getToken: () => `tok${++tokenNo}` });
  const seen = [];
  const off = s.subscribePresence(['request:1'], (doc) => seen.push(doc.count));
  await settle();
  failStreamThreeTimes();
  mock.timers.tick(0);
  await settle();
  assert.deepEqual(seen, [1], 'polled at once');
  assert.match(net.calls[0].url, /\/api\/presence\/resources\/request%3A1$/);
  mock.timers.tick(30000);
  await settle();
  assert.deepEqual(seen, [1, 0], 'and every 30 s');
  mock.timers.tick(5 * 60 * 1000 - 30000);
  await settle();
  FakeEventSource.last.emit('presence', presenceEvent(viewers('request:1', 'cy')));
  assert.deepEqual(seen, [1, 0, 1], 'the stream is back after 5 min');
  const calls = net.calls.length;
  mock.timers.tick(120000);
  await settle();
  assert.equal(net.calls.length, calls, 'no polling once the stream is back');
  off();
  await settle();
  assert.equal(pending.size, 0, 'nothing left running after unsubscribe');
});

test('subscribePresence polls what one stream cannot carry, and refuses bad ids', async () => {
  const s = service({ EventSource: FakeEventSource });
  const ids = Array.from({ length: 21 }, (_, i) => `r${i}`);
  net.answers.push(reply(200, viewers('r20', 'ann')));
  const seen = [];
  const off = s.subscribePresence(ids, (doc) => seen.push(doc.resource));
  await settle();
  mock.timers.tick(0);
  await settle();
  assert.equal(new URL(FakeEventSource.last.url).searchParams.get('resources').split(',').length, 20);
  assert.deepEqual(net.calls.map((c) => c.url), ['https://presence.test/api/presence/resources/r20']);
  assert.deepEqual(seen, ['r20']);
  off();
  await settle();
  assert.equal(pending.size, 0);
  for (const bad of [[''], ['a\nb'], 'request:1', [1]]) {
    assert.throws(() => s.subscribePresence(bad, () => {}), TypeError, String(bad));
  }
  assert.throws(() => s.subscribePresence(['r'], null), TypeError);
});

test('without an EventSource, subscribePresence polls the viewers every pollMs', async () => {
  const s = service({ pollMs: 10000 });
  net.answers.push(reply(200, viewers('r', 'ann')), reply(200, viewers('r')));
  const seen = [];
  const off = s.subscribePresence(['r'], (doc) => seen.push(doc.count));
  await settle();
  mock.timers.tick(0);
  await settle();
  assert.deepEqual(seen, [1]);
  mock.timers.tick(10000);
  await settle();
  assert.deepEqual(seen, [1, 0]);
  off();
  await settle();
  assert.equal(pending.size, 0);
});
