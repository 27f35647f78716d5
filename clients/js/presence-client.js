// presence-client.js: the browser client of the presence service.
//
// One dependency-free ES module. `heartbeatService` is ready to use on the
// product's own origin (token from localStorage.token); create others with
// `createHeartbeatService(options)`. See presence-client.d.ts for the types
// and the README ("Browser client") for React and plain-HTML examples.

const CLIENT_ID_KEY = 'presence.clientId';
const MAX_PAGE_LENGTH = 256;
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_AFTER_MS = 10 * 60 * 1000;
const REQUEST_TIMEOUT_MS = 10000;
const POLL_MS = 30000;
const STREAM_RETRY_AFTER_POLLING_MS = 5 * 60 * 1000;
const STREAM_ERRORS_BEFORE_POLLING = 3;

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

  function schedule(delayMs, gen) {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      enqueue(() => beat(gen));
    }, Math.max(0, delayMs));
  }

  // After n failures in a row: 1 s, 2 s, 4 s, ... up to the interval.
  const backoff = () => Math.min(intervalMs, FIRST_RETRY_MS * 2 ** Math.max(0, failures - 1));

  async function beat(gen) {
    if (gen !== generation || currentModule === null) return;
    const bearer = token();
    if (!bearer) {
      report(new Error('presence: no token; heartbeat skipped'));
      schedule(intervalMs, gen);
      return;
    }
    const body = { module: currentModule, clientId: getClientId() };
    const page = currentPage(target);
    if (page) body.page = page;
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
  }

  function onPageHide() {
    if (currentModule === null) return;
    halt();
    // The page is going: send now rather than behind the queue.
    const request = leaveRequest();
    if (request) fetchImpl(...request).catch(report);
  }

  function onPageShow(event) {
    // Back from the back/forward cache: the page is in use again.
    if (event?.persisted && currentModule !== null) {
      halt();
      const gen = generation;
      enqueue(() => beat(gen));
    }
  }

  let listening = false;
  function listen(on) {
    if (!target?.addEventListener || listening === on) return;
    listening = on;
    const method = on ? 'addEventListener' : 'removeEventListener';
    target[method]('pagehide', onPageHide);
    target[method]('pageshow', onPageShow);
  }

  return {
    startHeartbeat(module) {
      if (typeof module !== 'string' || module === '') {
        throw new TypeError('startHeartbeat(module): module must be a non-empty string');
      }
      if (module === currentModule) return;
      halt();
      failures = 0;
      currentModule = module;
      listen(true);
      const gen = generation;
      enqueue(() => beat(gen));
    },

    stopHeartbeat() {
      if (currentModule === null) return;
      halt();
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
