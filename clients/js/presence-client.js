// presence-client.js: the browser client of the presence service.
//
// One dependency-free ES module. `heartbeatService` is ready to use on the
// product's own origin (token from localStorage.token); create others with
// `createHeartbeatService(options)`. See presence-client.d.ts for the types
// and the README ("Browser client") for React and plain-HTML examples.

const CLIENT_ID_KEY = 'presence.clientId';
const MAX_PAGE_LENGTH = 256;
const FIRST_RETRY_MS = 1000;
const POLL_MS = 30000;
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
    // Hosts other than a browser tab (and tests) can pass their own.
    fetch: fetchImpl = (...args) => globalThis.fetch(...args),
    EventSource: EventSourceImpl = globalThis.EventSource,
    storage = globalThis.sessionStorage,
    target = globalThis.window,
  } = options;

  let currentModule = null;
  let timer = null;
  let generation = 0; // bumps on every start/stop, so stale replies are ignored
  let failures = 0;
  let clientId = null;

  const url = (path) => `${baseUrl}${path}`;
  const report = (error) => {
    try {
      onError(error);
    } catch {
      // A failing onError must not break the heartbeat.
    }
  };

  // One id per tab: kept in sessionStorage, which each tab has its own of.
  function getClientId() {
    if (clientId) return clientId;
    try {
      clientId = storage?.getItem(CLIENT_ID_KEY) ?? null;
    } catch {
      clientId = null;
    }
    if (!clientId) {
      clientId = randomId();
      try {
        storage?.setItem(CLIENT_ID_KEY, clientId);
      } catch {
        // Storage may be disabled; the id then lasts as long as this page.
      }
    }
    return clientId;
  }

  function authHeaders() {
    const token = getToken();
    return token ? { Authorization: `Bearer ${token}` } : null;
  }

  function schedule(delayMs, gen) {
    clearTimeout(timer);
    timer = setTimeout(() => beat(gen), Math.max(0, delayMs));
  }

  // After n failures in a row: 1 s, 2 s, 4 s, ... up to the interval.
  const backoff = () => Math.min(intervalMs, FIRST_RETRY_MS * 2 ** Math.max(0, failures - 1));

  async function beat(gen) {
    if (gen !== generation || currentModule === null) return;
    const headers = authHeaders();
    if (!headers) {
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
        headers: { ...headers, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
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
        delay = retryAfterMs(response) ?? backoff();
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

  // Ends this tab's session now. keepalive lets it outlive the page.
  function leave() {
    const headers = authHeaders();
    if (!headers || !clientId) return;
    fetchImpl(url(`/api/stats/heartbeat?clientId=${encodeURIComponent(clientId)}`), {
      method: 'DELETE',
      headers,
      keepalive: true,
    }).catch(report);
  }

  function onPageHide() {
    if (currentModule === null) return;
    generation += 1;
    clearTimeout(timer);
    timer = null;
    leave();
  }

  function onPageShow(event) {
    // Back from the back/forward cache: the page is in use again.
    if (event?.persisted && currentModule !== null) {
      generation += 1;
      beat(generation);
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
      if (module === currentModule && timer !== null) return;
      generation += 1;
      clearTimeout(timer);
      timer = null;
      failures = 0;
      currentModule = module;
      listen(true);
      beat(generation);
    },

    stopHeartbeat() {
      if (currentModule === null) return;
      generation += 1;
      clearTimeout(timer);
      timer = null;
      currentModule = null;
      listen(false);
      leave();
    },

    getCurrentModule() {
      return currentModule;
    },

    subscribeModuleStats(callback) {
      let closed = false;
      let source = null;
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
        if (closed) return;
        const headers = authHeaders();
        if (headers) {
          try {
            const response = await fetchImpl(url('/api/stats/modules'), { headers });
            if (response.ok) deliver(await response.json());
            else report(new Error(`presence: module stats answered ${response.status}`));
          } catch (error) {
            report(error);
          }
        }
        if (!closed) pollTimer = setTimeout(poll, pollMs);
      }

      function fallBackToPolling() {
        source?.close();
        source = null;
        if (pollTimer === null) poll();
      }

      const token = getToken();
      if (EventSourceImpl && token) {
        source = new EventSourceImpl(
          url(`/api/stats/stream?access_token=${encodeURIComponent(token)}`),
        );
        source.addEventListener('modules', (event) => {
          streamErrors = 0;
          try {
            deliver(JSON.parse(event.data));
          } catch (error) {
            report(error);
          }
        });
        source.addEventListener('error', () => {
          streamErrors += 1;
          // EventSource retries by itself; give up on it when it has closed
          // or keeps failing, and poll instead.
          if (source?.readyState === 2 || streamErrors >= STREAM_ERRORS_BEFORE_POLLING) {
            report(new Error('presence: stream failed; polling module stats instead'));
            fallBackToPolling();
          }
        });
      } else {
        poll();
      }

      return () => {
        closed = true;
        source?.close();
        source = null;
        clearTimeout(pollTimer);
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
