// presence-client.js: the browser client of the presence service.
//
// One dependency-free ES module. `heartbeatService` is ready to use on the
// product's own origin (token from localStorage.token); create others with
// `createHeartbeatService(options)`. See presence-client.d.ts for the types
// and the README ("Browser client") for React and plain-HTML examples.
//
// Besides the module, each heartbeat carries the tab's activity state
// (`active`, or `idle` after `idleAfterMs` without input or while the tab is
// hidden) and the resource set with `setResource()`. Input only flips the
// state; a change is sent at once as an extra heartbeat, at most one such
// heartbeat per 5 s (CHANGE_GAP_MS), and it carries the latest state and
// resource when it goes out.

const CLIENT_ID_KEY = 'presence.clientId';
const MAX_PAGE_LENGTH = 256;
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_AFTER_MS = 10 * 60 * 1000;
const REQUEST_TIMEOUT_MS = 10000;
const POLL_MS = 30000;
const STREAM_RETRY_AFTER_POLLING_MS = 5 * 60 * 1000;
const STREAM_ERRORS_BEFORE_POLLING = 3;
const IDLE_AFTER_MS = 60000;
// The shortest time between two heartbeats sent for a change of state or
// resource: a tab flipping between hidden and visible, or a user paging
// through requests, costs at most one request per 5 s (the service allows a
// burst of 20, then one per 2 s).
const CHANGE_GAP_MS = 5000;
const MAX_RESOURCE_LENGTH = 128;
// The most resources one presence stream carries (the service's bound); a
// page watching more polls the rest.
const MAX_STREAM_RESOURCES = 20;
const CONTROL_CHARACTER = /[\u0000-\u001F\u007F-\u009F]/;
// setTimeout fires at once for longer delays than this.
const MAX_TIMER_MS = 2 ** 31 - 1;
// Input that says someone is at this tab. Listened to in the capture phase
// (an element's scroll does not bubble) and passively (never delays scrolling).
const INPUT_EVENTS = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'scroll'];
const INPUT_LISTENER = { capture: true, passive: true };

/**
 * Creates a heartbeat service. Every option is optional.
 * @param {import('./presence-client').HeartbeatOptions} [options]
 * @returns {import('./presence-client').HeartbeatService}
 */
export function createHeartbeatService(options = {}) {
  const {
    baseUrl = '',
    getToken = () => globalThis.localStorage?.getItem('token') ?? null,
    intervalMs = 45000,
    idleAfterMs = IDLE_AFTER_MS,
    onError = (error) => console.debug('[presence]', error),
    pollMs = POLL_MS,
    // Hosts other than a browser tab (and tests) can pass their own;
    // `EventSource: null` turns the stream off (polling only).
    fetch: fetchImpl = (...args) => globalThis.fetch(...args),
    EventSource: EventSourceImpl = globalThis.EventSource,
    storage = null,
    target = globalThis.window,
  } = options;

  let currentModule = null;
  let timer = null;
  let generation = 0; // bumps on every start/stop/hide, so stale work is dropped
  let failures = 0;
  let clientId = null;
  // Requests go one at a time, in order: a DELETE from stop() and the POST of
  // the start() that follows can never overtake each other on the network.
  let queue = Promise.resolve();
  // Beats in the queue whose body is not built yet: they will carry the
  // latest state and resource, so a change needs no beat of its own.
  let beatsWaiting = 0;

  // What this tab reports, and what the latest beat sent said.
  let state = 'active';
  let resource = null;
  let sent = { state: null, resource: null };
  let lastInputAt = 0;
  let idleTimer = null;
  let changeTimer = null;
  let lastChangeAt = -Infinity;
  // Between pagehide and pageshow nothing is sent: the DELETE sent on
  // pagehide must stay the last word (Chromium fires visibilitychange after
  // pagehide when a tab closes).
  let gone = false;

  const url = (path) => `${baseUrl}${path}`;
  const report = (error) => {
    try {
      onError(error);
    } catch {
      // A failing onError must not break the heartbeat.
    }
  };
  const enqueue = (task) => {
    const run = queue.then(task, task);
    queue = run.catch(() => {});
    return run;
  };

  function token() {
    try {
      return getToken() || null;
    } catch (error) {
      report(error);
      return null;
    }
  }

  // One id per tab: kept in sessionStorage, which each tab has its own of.
  function getClientId() {
    if (clientId) return clientId;
    let store = storage;
    try {
      store ??= globalThis.sessionStorage; // throws where storage is blocked
      clientId = store?.getItem(CLIENT_ID_KEY) ?? null;
      if (!clientId) {
        clientId = randomId();
        store?.setItem(CLIENT_ID_KEY, clientId);
      }
    } catch {
      clientId ??= randomId(); // then the id lasts as long as this page
    }
    return clientId;
  }

  function enqueueBeat(gen) {
    beatsWaiting += 1;
    enqueue(() => beat(gen));
  }

  function schedule(delayMs, gen) {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      enqueueBeat(gen);
    }, Math.max(0, delayMs));
  }

  // After n failures in a row: 1 s, 2 s, 4 s, ... up to the interval.
  const backoff = () => Math.min(intervalMs, FIRST_RETRY_MS * 2 ** Math.max(0, failures - 1));

  async function beat(gen) {
    beatsWaiting -= 1;
    if (gen !== generation || currentModule === null) return;
    const bearer = token();
    if (!bearer) {
      report(new Error('presence: no token; heartbeat skipped'));
      schedule(intervalMs, gen);
      return;
    }
    const body = { module: currentModule, clientId: getClientId(), state };
    const page = currentPage(target);
    if (page) body.page = page;
    if (resource !== null) body.resource = resource;
    sent = { state, resource };
    let delay = intervalMs;
    try {
      const response = await fetchImpl(url('/api/stats/heartbeat'), {
        method: 'POST',
        headers: { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: timeoutSignal(),
      });
      if (gen !== generation) return;
      if (response.ok) {
        failures = 0;
        const reply = await response.json().catch(() => ({}));
        if (Number.isFinite(reply.nextHeartbeatMs) && reply.nextHeartbeatMs > 0) {
          delay = reply.nextHeartbeatMs;
        }
      } else if (response.status === 429 || response.status === 503) {
        failures += 1;
        // Retry-After, but never sooner than the back-off (a proxy's
        // "Retry-After: 0" must not become a tight loop) nor absurdly late.
        delay = Math.min(Math.max(retryAfterMs(response) ?? 0, backoff()), MAX_RETRY_AFTER_MS);
        report(new Error(`presence: heartbeat answered ${response.status}; retrying in ${delay} ms`));
      } else {
        failures = 0;
        report(new Error(`presence: heartbeat answered ${response.status}`));
      }
    } catch (error) {
      if (gen !== generation) return;
      failures += 1;
      delay = backoff();
      report(error);
    }
    if (gen === generation) schedule(delay, gen);
  }

  // Activity: the tab is active while visible and used within idleAfterMs.
  // Without a target to hear input from (not a browser tab) it stays active.
  const visible = () => target?.document?.visibilityState !== 'hidden';

  function armIdleTimer(delayMs) {
    clearTimeout(idleTimer);
    idleTimer = null;
    if (Number.isFinite(idleAfterMs) && target?.addEventListener) {
      idleTimer = setTimeout(checkIdle, Math.min(Math.max(0, delayMs), MAX_TIMER_MS));
    }
  }

  function stopIdleTimer() {
    clearTimeout(idleTimer);
    idleTimer = null;
  }

  // Input does not touch the timer (a mouse move is too frequent for that):
  // when the timer fires it looks at the latest input and waits the rest.
  function checkIdle() {
    idleTimer = null;
    const quietMs = Date.now() - lastInputAt;
    if (quietMs >= idleAfterMs) setState('idle');
    else armIdleTimer(idleAfterMs - Math.max(0, quietMs));
  }

  /** Reads the state afresh from the page's visibility: visible is a fresh start. */
  function observeVisibility() {
    if (visible()) {
      lastInputAt = Date.now();
      armIdleTimer(idleAfterMs);
      return 'active';
    }
    stopIdleTimer();
    return 'idle';
  }

  function onVisibilityChange() {
    setState(observeVisibility());
  }

  function onInput() {
    lastInputAt = Date.now();
    if (state === 'idle' && visible()) {
      armIdleTimer(idleAfterMs);
      setState('active');
    }
  }

  function setState(next) {
    if (next === state) return;
    state = next;
    changed();
  }

  // A change of state or resource goes out at once, unless a beat for a
  // change went out less than CHANGE_GAP_MS ago: then when that gap ends.
  // Nothing extra while a beat waits in the queue or a retry is pending
  // after a failure: those carry the latest values anyway.
  function changed() {
    if (currentModule === null || gone || changeTimer !== null) return;
    const waitMs = lastChangeAt + CHANGE_GAP_MS - Date.now();
    if (waitMs > 0) changeTimer = setTimeout(sendChange, waitMs);
    else sendChange();
  }

  function sendChange() {
    changeTimer = null;
    if (currentModule === null || gone || failures > 0 || beatsWaiting > 0) return;
    if (sent.state === state && sent.resource === resource) return;
    lastChangeAt = Date.now();
    enqueueBeat(generation);
  }

  function leaveRequest() {
    const bearer = token();
    if (!bearer || !clientId) return null;
    return [
      url(`/api/stats/heartbeat?clientId=${encodeURIComponent(clientId)}`),
      // keepalive lets it outlive the page.
      { method: 'DELETE', headers: { Authorization: `Bearer ${bearer}` }, keepalive: true },
    ];
  }

  function halt() {
    generation += 1;
    clearTimeout(timer);
    timer = null;
    clearTimeout(changeTimer);
    changeTimer = null;
  }

  function onPageHide() {
    if (currentModule === null) return;
    gone = true;
    halt();
    // The page is going: send now rather than behind the queue.
    const request = leaveRequest();
    if (request) fetchImpl(...request).catch(report);
  }

  function onPageShow(event) {
    // Back from the back/forward cache: the page is in use again.
    if (event?.persisted && currentModule !== null) {
      gone = false;
      halt();
      state = observeVisibility();
      enqueueBeat(generation);
    }
  }

  let listening = false;
  function listen(on) {
    if (!target?.addEventListener || listening === on) return;
    listening = on;
    const method = on ? 'addEventListener' : 'removeEventListener';
    target[method]('pagehide', onPageHide);
    target[method]('pageshow', onPageShow);
    // visibilitychange bubbles from the document to the window.
    target[method]('visibilitychange', onVisibilityChange);
    for (const type of INPUT_EVENTS) target[method](type, onInput, INPUT_LISTENER);
  }

  function callSub(sub, doc) {
    try {
      sub.onChange(doc);
    } catch (error) {
      report(error);
    }
  }

  // Every subscribePresence of this service shares one EventSource for the
  // union of their resources (browsers keep about six connections per
  // origin); when the union changes, it is reopened for the new set.
  const presence = (() => {
    const subs = new Set();
    const docs = new Map(); // resource -> its latest viewers document
    let source = null;
    let streamed = []; // the resources the open (or opening) stream carries
    let streamedWith = null; // and the token it was opened with
    let retryTimer = null;
    let pollTimer = null;
    let streamErrors = 0;
    let reopenQueued = false;

    const wanted = () => {
      const all = new Set();
      for (const sub of subs) for (const id of sub.resources) all.add(id);
      return [...all];
    };
    // The resources read by polling: all when there is no stream, else those
    // beyond what one stream carries.
    const polled = () => {
      const all = wanted();
      return source === null ? all : all.filter((id) => !streamed.includes(id));
    };

    function deliver(doc) {
      if (!doc || typeof doc.resource !== 'string') return;
      docs.set(doc.resource, doc);
      for (const sub of subs) if (sub.resources.has(doc.resource)) callSub(sub, doc);
    }

    async function poll() {
      pollTimer = null;
      const ids = polled();
      const bearer = token();
      if (bearer) {
        for (const id of ids) {
          try {
            const response = await fetchImpl(url(`/api/presence/resources/${encodeURIComponent(id)}`), {
              headers: { Authorization: `Bearer ${bearer}` },
              signal: timeoutSignal(),
            });
            if (response.ok) deliver(await response.json());
            else report(new Error(`presence: viewers of ${id} answered ${response.status}`));
          } catch (error) {
            report(error);
          }
        }
      }
      if (pollTimer === null && polled().length > 0) pollTimer = setTimeout(poll, pollMs);
    }

    function startPolling() {
      if (pollTimer === null && polled().length > 0) pollTimer = setTimeout(poll, 0);
    }

    function close() {
      source?.close();
      source = null;
      streamed = [];
      clearTimeout(retryTimer);
      retryTimer = null;
    }

    function open() {
      retryTimer = null;
      const all = wanted();
      if (all.length === 0) return;
      const bearer = token();
      if (!EventSourceImpl || !bearer) {
        startPolling();
        return;
      }
      streamed = all.slice(0, MAX_STREAM_RESOURCES);
      streamedWith = bearer;
      const list = streamed.map(encodeURIComponent).join(',');
      // Each (re)connection reads the token afresh: EventSource's own
      // reconnects would reuse an expired one.
      const es = new EventSourceImpl(
        url(`/api/presence/stream?resources=${list}&access_token=${encodeURIComponent(bearer)}`));
      source = es;
      es.addEventListener('presence', (event) => {
        if (source !== es) return;
        streamErrors = 0;
        try {
          deliver(JSON.parse(event.data));
        } catch (error) {
          report(error);
        }
      });
      es.addEventListener('error', () => {
        if (source !== es) return;
        close();
        streamErrors += 1;
        if (streamErrors >= STREAM_ERRORS_BEFORE_POLLING) {
          report(new Error('presence: presence stream failed; polling viewers, trying the stream again later'));
          streamErrors = 0;
          startPolling();
          retryTimer = setTimeout(open, STREAM_RETRY_AFTER_POLLING_MS);
        } else {
          retryTimer = setTimeout(open, FIRST_RETRY_MS * 2 ** (streamErrors - 1));
        }
      });
      // Resources beyond one stream's bound are polled.
      startPolling();
    }

    return {
      subs,
      docs,
      // Called when the set of subscriptions changes; changes made in one
      // task reopen the stream once.
      resubscribe() {
        if (reopenQueued) return;
        reopenQueued = true;
        queueMicrotask(() => {
          reopenQueued = false;
          const all = wanted();
          for (const id of docs.keys()) if (!all.includes(id)) docs.delete(id);
          if (all.length === 0) {
            close();
            clearTimeout(pollTimer);
            pollTimer = null;
            return;
          }
          // A new token (another user signed in) reopens it too.
          const same = all.length === streamed.length && all.every((id) => streamed.includes(id))
            && (source === null || token() === streamedWith);
          if (same && (source !== null || retryTimer !== null)) return;
          // Polling or waiting to retry: keep that rhythm, with the new set.
          if (source === null && retryTimer !== null) {
            startPolling();
            return;
          }
          close();
          open();
        });
      },
    };
  })();

  return {
    startHeartbeat(module) {
      if (typeof module !== 'string' || module === '') {
        throw new TypeError('startHeartbeat(module): module must be a non-empty string');
      }
      if (module === currentModule) return;
      halt();
      failures = 0;
      if (currentModule === null) {
        gone = false;
        state = observeVisibility();
      }
      currentModule = module;
      listen(true);
      enqueueBeat(generation);
    },

    stopHeartbeat() {
      if (currentModule === null) return;
      halt();
      stopIdleTimer();
      currentModule = null;
      listen(false);
      enqueue(async () => {
        const request = leaveRequest();
        if (request) await fetchImpl(...request).catch(report);
      });
    },

    getCurrentModule() {
      return currentModule;
    },

    setResource(id) {
      if (id !== null && !isResourceId(id)) {
        throw new TypeError(
          'setResource(id): id must be null or 1 to 128 characters without control characters');
      }
      if (id === resource) return;
      resource = id;
      changed();
    },

    getResource() {
      return resource;
    },

    getState() {
      return state;
    },

    subscribePresence(resources, onChange) {
      if (!Array.isArray(resources) || !resources.every(isResourceId)) {
        throw new TypeError(
          'subscribePresence(resources, onChange): resources must be an array of ids of 1 to 128 characters without control characters');
      }
      if (typeof onChange !== 'function') {
        throw new TypeError('subscribePresence(resources, onChange): onChange must be a function');
      }
      const sub = { resources: new Set(resources), onChange };
      presence.subs.add(sub);
      // What is known already is delivered at once, as the stream would.
      for (const id of sub.resources) {
        const doc = presence.docs.get(id);
        if (doc) queueMicrotask(() => presence.subs.has(sub) && callSub(sub, doc));
      }
      presence.resubscribe();
      return () => {
        if (!presence.subs.delete(sub)) return;
        presence.resubscribe();
      };
    },

    subscribeModuleStats(callback) {
      let closed = false;
      let source = null;
      let retryTimer = null;
      let pollTimer = null;
      let streamErrors = 0;

      const deliver = (stats) => {
        if (closed) return;
        try {
          callback(stats);
        } catch (error) {
          report(error);
        }
      };

      async function poll() {
        pollTimer = null;
        if (closed) return;
        const bearer = token();
        if (bearer) {
          try {
            const response = await fetchImpl(url('/api/stats/modules'), {
              headers: { Authorization: `Bearer ${bearer}` },
              signal: timeoutSignal(),
            });
            if (response.ok) deliver(await response.json());
            else report(new Error(`presence: module stats answered ${response.status}`));
          } catch (error) {
            report(error);
          }
        }
        if (!closed && source === null) pollTimer = setTimeout(poll, pollMs);
      }

      function openStream() {
        retryTimer = null;
        if (closed) return;
        const bearer = token();
        if (!EventSourceImpl || !bearer) {
          if (pollTimer === null) poll();
          return;
        }
        // Each (re)connection reads the token afresh: EventSource's own
        // reconnects would reuse an expired one.
        source = new EventSourceImpl(url(`/api/stats/stream?access_token=${encodeURIComponent(bearer)}`));
        source.addEventListener('modules', (event) => {
          streamErrors = 0;
          clearTimeout(pollTimer);
          pollTimer = null;
          try {
            deliver(JSON.parse(event.data));
          } catch (error) {
            report(error);
          }
        });
        source.addEventListener('error', () => {
          source?.close();
          source = null;
          if (closed) return;
          streamErrors += 1;
          if (streamErrors >= STREAM_ERRORS_BEFORE_POLLING) {
            report(new Error('presence: stream failed; polling module stats, trying the stream again later'));
            streamErrors = 0;
            if (pollTimer === null) poll();
            retryTimer = setTimeout(openStream, STREAM_RETRY_AFTER_POLLING_MS);
          } else {
            retryTimer = setTimeout(openStream, FIRST_RETRY_MS * 2 ** (streamErrors - 1));
          }
        });
      }

      openStream();

      return () => {
        closed = true;
        source?.close();
        source = null;
        clearTimeout(retryTimer);
        clearTimeout(pollTimer);
        retryTimer = null;
        pollTimer = null;
      };
    },
  };
}

/** A ready instance for the product's own origin. */
export const heartbeatService = createHeartbeatService();

function currentPage(target) {
  const path = target?.location?.pathname;
  return typeof path === 'string' && path !== '' ? [...path].slice(0, MAX_PAGE_LENGTH).join('') : null;
}

function isResourceId(id) {
  if (typeof id !== 'string' || id === '' || CONTROL_CHARACTER.test(id)) return false;
  return [...id].length <= MAX_RESOURCE_LENGTH;
}

function timeoutSignal() {
  return typeof AbortSignal?.timeout === 'function' ? AbortSignal.timeout(REQUEST_TIMEOUT_MS) : undefined;
}

function retryAfterMs(response) {
  const value = response.headers?.get?.('Retry-After');
  if (value == null) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : null;
}

function randomId() {
  const cryptoImpl = globalThis.crypto;
  if (cryptoImpl?.randomUUID) return cryptoImpl.randomUUID();
  const bytes = new Uint8Array(16);
  if (cryptoImpl?.getRandomValues) cryptoImpl.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
