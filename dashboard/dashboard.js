// dashboard.js: the admin dashboard of the presence service (GET /admin).
//
// A plain ES module: no build step, no dependency but the service's own
// browser client. It shows
//   - live counts per module, from the SSE stream (subscribeModuleStats);
//   - active users per module over 1 h / 6 h / 24 h, peak concurrent, average
//     session length, sessions started and the module distribution, from
//     GET /api/admin/history (refreshed every minute);
//   - the live sessions, from GET /api/admin/sessions (every 15 s, paged);
//   - the webhook endpoints, from GET /api/admin/webhooks (every 15 s; the
//     card shows only when an endpoint is configured).
//
// Everything that comes from users or the service (module names, user ids,
// pages, resources) reaches the page through textContent or setAttribute,
// never through innerHTML.

import { createHeartbeatService } from '/admin/presence-client.js';

const PASTED_TOKEN_KEY = 'presence.adminToken'; // sessionStorage: a token pasted here
const SITE_TOKEN_KEY = 'token'; // localStorage: the product's own login
const PREFS_KEY = 'presence.adminPrefs'; // sessionStorage: window and page size

const SESSIONS_REFRESH_MS = 15_000;
const HISTORY_REFRESH_MS = 60_000;
const CLOCK_TICK_MS = 5_000; // "12 s ago" labels
const SESSIONS_AFTER_CHANGE_MS = 1_000; // list refresh after a live count change
const REQUEST_TIMEOUT_MS = 10_000;
const SAMPLE_GAP_MS = 150_000; // samples come once a minute; a longer gap breaks the line
const MIN_CHART_SPAN_MS = 15 * 60_000;

const WINDOWS = { '1h': 'last hour', '6h': 'last 6 hours', '24h': 'last 24 hours' };
const WINDOW_MS = { '1h': 3_600_000, '6h': 6 * 3_600_000, '24h': 24 * 3_600_000 };
const PALETTE = ['#3563e9', '#e8743b', '#16a37b', '#9256d9', '#d6457a', '#0e9bb5', '#b7902b', '#667085'];
const SVG_NS = 'http://www.w3.org/2000/svg';

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

/** Creates an element. String children become text nodes, never HTML. */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

/** Creates an SVG element with these attributes. */
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// Storage can throw (blocked cookies, sandboxed frames): treat that as empty.
function storageGet(kind, key) {
  try {
    return globalThis[kind]?.getItem(key) ?? null;
  } catch {
    return null;
  }
}
function storageSet(kind, key, value) {
  try {
    if (value == null) globalThis[kind]?.removeItem(key);
    else globalThis[kind]?.setItem(key, value);
  } catch {
    // Not kept: fine, it lasts as long as the page.
  }
}

const numberFormat = new Intl.NumberFormat();
const fmtNumber = (n) => (Number.isFinite(n) ? numberFormat.format(n) : '–');
const fmtClock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
const fmtClockSeconds = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const fmtDateTime = (ms) => new Date(ms).toLocaleString([], { dateStyle: 'medium', timeStyle: 'medium' });

/** 412.5 → "6 min 53 s"; 5400 → "1 h 30 min". */
function fmtDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** How long ago `ms` was, for "last seen". */
function fmtAgo(ms) {
  const seconds = Math.max(0, (serverNow() - ms) / 1000);
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${fmtDuration(seconds)} ago`;
}

// ------------------------------------------------------------------ state

const state = {
  generation: 0, // bumps at every start/stop: answers for an older one are dropped
  unsubscribe: null,
  timers: [],
  sessionsSoon: null, // pending list refresh after a count change
  serverOffsetMs: 0, // server clock minus ours, so "12 s ago" is right on a skewed laptop
  stats: null, // last modules JSON from the stream
  history: null, // last history JSON
  historyStatus: 'idle', // loading | ok | unavailable (404) | error
  historyError: null,
  windowKey: '1h',
  page: null, // last sessions page
  pageError: null,
  cursors: [null], // cursor of every page visited; the last is the current page
  pageSize: 25,
  filter: '', // module code, '' for all
  seenModules: new Set(), // module codes seen in sessions, for the filter
  colors: new Map(), // module key → colour, stable for the page's life
  chartWidth: 0,
};

const serverNow = () => Date.now() + state.serverOffsetMs;

function noteServerTime(timestamp) {
  const at = Date.parse(timestamp);
  if (Number.isFinite(at)) state.serverOffsetMs = at - Date.now();
}

function colorFor(moduleKey) {
  if (!state.colors.has(moduleKey)) {
    state.colors.set(moduleKey, PALETTE[state.colors.size % PALETTE.length]);
  }
  return state.colors.get(moduleKey);
}

/** Module keys (e.g. "procurement"), in the service's order: live stats first, then history. */
function moduleKeys() {
  const keys = [];
  const add = (key) => { if (key !== 'timestamp' && !keys.includes(key)) keys.push(key); };
  if (state.stats) Object.keys(state.stats).forEach(add);
  if (state.history?.modules) Object.keys(state.history.modules).forEach(add);
  keys.forEach(colorFor);
  return keys;
}

function loadPrefs() {
  try {
    const prefs = JSON.parse(storageGet('sessionStorage', PREFS_KEY) ?? '{}');
    if (prefs.windowKey in WINDOWS) state.windowKey = prefs.windowKey;
    if ([10, 25, 50, 100].includes(prefs.pageSize)) state.pageSize = prefs.pageSize;
  } catch {
    // Defaults.
  }
}
function savePrefs() {
  storageSet('sessionStorage', PREFS_KEY, JSON.stringify({ windowKey: state.windowKey, pageSize: state.pageSize }));
}

// ------------------------------------------------------------------ token

const pastedToken = () => storageGet('sessionStorage', PASTED_TOKEN_KEY);
const siteToken = () => storageGet('localStorage', SITE_TOKEN_KEY);
// A token pasted in this tab wins: pasting is an explicit choice, and it lets
// an admin use the dashboard on a browser logged in as a non-admin user.
const currentToken = () => pastedToken() || siteToken() || null;

class AuthError extends Error {
  constructor(status) {
    super(status === 403 ? 'not an admin token' : 'invalid or expired token');
    this.status = status;
  }
}

class HttpError extends Error {
  constructor(status, body) {
    super(body?.error ?? `the service answered ${status}`);
    this.status = status;
    this.code = body?.code ?? null;
  }
}

/** GET an admin endpoint as JSON; 401/403 become AuthError, other failures HttpError. */
async function getJson(path) {
  const token = currentToken();
  if (!token) throw new AuthError(401);
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token}` },
    cache: 'no-store',
    signal: AbortSignal.timeout?.(REQUEST_TIMEOUT_MS),
  });
  if (response.status === 401 || response.status === 403) throw new AuthError(response.status);
  if (!response.ok) throw new HttpError(response.status, await response.json().catch(() => null));
  const body = await response.json();
  noteServerTime(body?.timestamp);
  return body;
}

// -------------------------------------------------------------- lifecycle

/** Checks the token against the admin API, then shows the dashboard and starts its feeds. */
async function start() {
  stop();
  const gen = state.generation;
  if (!currentToken()) {
    showGate('none');
    return;
  }
  // Nothing from a previous token is shown with this one.
  Object.assign(state, {
    stats: null, history: null, historyStatus: 'idle', historyError: null,
    page: null, pageError: null, cursors: [null],
  });
  $('module-cards').replaceChildren();
  $('live-updated').textContent = '';
  showOnly('loading');
  // The first sessions page doubles as the admin check, so a non-admin token
  // never flashes an empty dashboard.
  try {
    await loadSessions(gen);
  } catch (error) {
    if (gen !== state.generation) return;
    if (error instanceof AuthError) {
      onAuthError(error);
      return;
    }
    // The service is unreachable or failing: show the dashboard anyway, with
    // the error in the list; the timers keep trying.
    state.pageError = error;
  }
  if (gen !== state.generation) return;
  showDashboard();

  const service = createHeartbeatService({
    getToken: currentToken,
    onError: (error) => {
      console.debug('[presence admin]', error);
      setLiveStatus('reconnecting');
    },
  });
  state.unsubscribe = service.subscribeModuleStats((stats) => {
    if (gen === state.generation) onStats(stats);
  });
  loadHistory(gen);
  loadWebhooks(gen);
  state.timers.push(
    setInterval(() => loadSessions(gen).catch((error) => onLoadError(error, gen)), SESSIONS_REFRESH_MS),
    setInterval(() => loadWebhooks(gen), SESSIONS_REFRESH_MS),
    setInterval(() => { if (state.historyStatus !== 'unavailable') loadHistory(gen); }, HISTORY_REFRESH_MS),
    setInterval(tickClocks, CLOCK_TICK_MS),
  );
}

/** Stops every feed (stream, timers); answers still in flight are dropped. */
function stop() {
  state.generation += 1;
  state.unsubscribe?.();
  state.unsubscribe = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearTimeout(state.sessionsSoon);
  state.sessionsSoon = null;
}

function onAuthError(error) {
  stop();
  // A pasted token the service refuses is of no further use in this tab.
  const fromPaste = Boolean(pastedToken());
  if (fromPaste) storageSet('sessionStorage', PASTED_TOKEN_KEY, null);
  showGate(error.status === 403 ? 'forbidden' : 'invalid', fromPaste ? 'pasted' : 'site');
}

function onLoadError(error, gen) {
  if (gen !== state.generation) return;
  if (error instanceof AuthError) onAuthError(error);
  else {
    state.pageError = error;
    renderSessions();
  }
}

// ---------------------------------------------------------------- screens

function showOnly(which) {
  $('loading').hidden = which !== 'loading';
  $('gate').hidden = which !== 'gate';
  $('dashboard').hidden = which !== 'dashboard';
}

const GATE_TEXT = {
  none: ['Sign in to the dashboard',
    'Paste an admin token: a token of the product whose role is admin.'],
  change: ['Use another token', 'Paste an admin token to use in this tab.'],
  invalid: ['Token invalid or expired',
    'The service did not accept this token (401): it has expired, is malformed, or was signed with another key. Paste a fresh admin token.'],
  forbidden: ['This token is not an admin token',
    'The token is valid, but it does not have the admin role, so the service refused the admin API (403). Sign in to the product as an administrator, or paste an admin token below.'],
};

/** The sign-in card; `reason` is none, change, invalid or forbidden. */
function showGate(reason, source) {
  const [title, text] = GATE_TEXT[reason];
  $('gate-title').textContent = title;
  const message = $('auth-message');
  message.dataset.reason = reason;
  message.className = reason === 'invalid' || reason === 'forbidden' ? 'alert' : '';
  message.textContent = text;
  if (source) {
    message.append(h('span', { class: 'alert-source' },
      source === 'pasted' ? 'It was the token pasted in this tab.' : "It was this site's login token (localStorage.token)."));
  }
  // Changing tokens: back to the dashboard, or sign out of a pasted token.
  $('gate-cancel').hidden = !(reason === 'change' && currentToken());
  $('gate-forget').hidden = !(reason === 'change' && pastedToken());
  $('change-token').hidden = true;
  $('live-status').hidden = true;
  $('token-source').textContent = '';
  showOnly('gate');
  $('token-input').value = '';
  $('token-input').focus();
}

function showDashboard() {
  showOnly('dashboard');
  $('change-token').hidden = false;
  $('token-source').textContent = pastedToken() ? 'Pasted token' : 'Signed in with this site’s login';
  setLiveStatus('connecting');
  for (const button of document.querySelectorAll('[data-window]')) {
    button.setAttribute('aria-pressed', String(button.dataset.window === state.windowKey));
  }
  $('page-size').value = String(state.pageSize);
  renderCards();
  renderChart();
  renderDistribution();
  renderSessions();
}

function setLiveStatus(status) {
  const pill = $('live-status');
  pill.hidden = false;
  pill.dataset.state = status;
  pill.textContent = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' }[status];
}

// ------------------------------------------------------------ live counts

function onStats(stats) {
  const before = state.stats;
  state.stats = stats;
  noteServerTime(stats.timestamp);
  setLiveStatus('live');
  const at = Date.parse(stats.timestamp);
  $('live-updated').textContent = Number.isFinite(at) ? `Updated ${fmtClockSeconds(at)}` : '';
  renderCards();
  renderDistribution();
  // Counts moved: sessions started or ended, so the first page of the list is
  // stale. Refresh it soon (once, however many events arrive meanwhile). A
  // reconnect repeats the same counts: that is no change.
  if (before && countsKey(before) !== countsKey(stats) && state.cursors.length === 1 && state.sessionsSoon === null) {
    const gen = state.generation;
    state.sessionsSoon = setTimeout(() => {
      state.sessionsSoon = null;
      loadSessions(gen).catch((error) => onLoadError(error, gen));
    }, SESSIONS_AFTER_CHANGE_MS);
  }
}

/** The counts without the timestamp, to tell a change from a repeat. */
function countsKey(stats) {
  return JSON.stringify(Object.entries(stats).filter(([key]) => key !== 'timestamp'));
}

/** One card per module: live counts, and the window's figures from history. */
function renderCards() {
  const container = $('module-cards');
  const keys = moduleKeys();
  if (keys.length === 0) {
    if (!container.querySelector('.empty')) {
      container.replaceChildren(h('p', { class: 'empty card', text: 'Waiting for the live counts…' }));
    }
    return;
  }
  container.querySelector('.empty')?.remove();
  const windowLabel = state.windowKey;
  for (const key of keys) {
    let card = [...container.children].find((node) => node.dataset.module === key);
    if (!card) {
      card = buildCard(key);
      container.append(card);
    }
    const stats = state.stats?.[key];
    // activeNow counts everyone present; idleNow those of them who are away
    // from the keyboard, so the rest are active.
    const counts = { ...stats };
    if (Number.isFinite(stats?.activeNow) && Number.isFinite(stats?.idleNow)) {
      counts.awakeNow = stats.activeNow - stats.idleNow;
    }
    for (const field of ['activeNow', 'awakeNow', 'idleNow', 'today', 'totalUsers']) {
      const node = card.querySelector(`[data-count="${field}"]`);
      const text = fmtNumber(counts[field]);
      if (node.textContent !== text) {
        node.textContent = text;
        bump(node);
      }
    }

    const figures = state.history?.modules?.[key];
    const ok = Boolean(state.history && figures); // the last good history, even if a refresh failed
    // Without a history endpoint there are no window figures to show.
    card.querySelector('.window-figures').hidden = state.historyStatus === 'unavailable';
    for (const label of card.querySelectorAll('[data-window-label]')) label.textContent = windowLabel;
    const peak = card.querySelector('[data-stat="peak"]');
    const peakValue = figures?.peakConcurrent?.value;
    const peakAt = Date.parse(figures?.peakConcurrent?.at ?? '');
    peak.replaceChildren(ok ? fmtNumber(peakValue) : '–');
    if (ok && Number.isFinite(peakAt)) {
      peak.append(h('small', { text: ` at ${fmtClock(peakAt)}`, title: fmtDateTime(peakAt) }));
    }
    const average = card.querySelector('[data-stat="averageSession"]');
    average.textContent = ok ? (figures.averageSessionSeconds == null ? '–' : fmtDuration(figures.averageSessionSeconds)) : '–';
    average.title = ok && figures.averageSessionSeconds == null ? 'No session ended in this window' : '';
    card.querySelector('[data-stat="sessionsStarted"]').textContent = ok ? fmtNumber(figures.sessionsStarted) : '–';
  }
}

function buildCard(key) {
  const stat = (label, name) => h('div', { class: 'figure' },
    h('dt', {}, label, ' ', h('span', { class: 'tag', 'data-window-label': true })),
    h('dd', { 'data-stat': name, text: '–' }));
  const card = h('article', { class: 'card module-card', 'data-module': key },
    h('header', {},
      h('span', { class: 'swatch', style: `background:${colorFor(key)}` }),
      h('h3', { text: key })),
    h('div', { class: 'card-main' },
      h('div', { class: 'headline' },
        h('b', { 'data-count': 'activeNow', text: '–' }),
        h('span', { text: 'here now' })),
      h('p', { class: 'presence-split muted' },
        h('span', { class: 'dot active', 'aria-hidden': 'true' }),
        h('b', { 'data-count': 'awakeNow', text: '–' }), ' active',
        h('span', { class: 'dot idle', 'aria-hidden': 'true' }),
        h('b', { 'data-count': 'idleNow', text: '–' }), ' idle'),
      h('dl', { class: 'counts' },
        h('div', {}, h('dt', { text: 'today' }), h('dd', { 'data-count': 'today', text: '–' })),
        h('div', {}, h('dt', { text: 'all time' }), h('dd', { 'data-count': 'totalUsers', text: '–' })))),
    h('dl', { class: 'window-figures' },
      stat('peak', 'peak'),
      stat('avg session', 'averageSession'),
      stat('sessions', 'sessionsStarted')));
  return card;
}

/** A short highlight on a number that just changed. */
function bump(node) {
  node.classList.remove('bump');
  void node.offsetWidth; // restart the animation
  node.classList.add('bump');
}

// ---------------------------------------------------------------- history

async function loadHistory(gen) {
  const windowKey = state.windowKey;
  if (state.historyStatus !== 'ok') {
    state.historyStatus = 'loading';
    renderChart();
  }
  try {
    const history = await getJson(`/api/admin/history?window=${encodeURIComponent(windowKey)}`);
    if (gen !== state.generation || windowKey !== state.windowKey) return;
    state.history = history;
    state.historyStatus = 'ok';
  } catch (error) {
    if (gen !== state.generation || windowKey !== state.windowKey) return;
    if (error instanceof AuthError) {
      onAuthError(error);
      return;
    }
    // 404: this service has no history endpoint (an older version); the rest
    // of the dashboard works without it. Anything else: keep the last chart,
    // say so, and try again at the next refresh.
    state.historyStatus = error instanceof HttpError && error.status === 404 ? 'unavailable' : 'error';
    state.historyError = error;
    if (state.historyStatus === 'unavailable') state.history = null;
  }
  renderCards();
  renderChart();
  renderDistribution();
}

function chooseWindow(windowKey) {
  if (!(windowKey in WINDOWS) || windowKey === state.windowKey) return;
  state.windowKey = windowKey;
  savePrefs();
  for (const button of document.querySelectorAll('[data-window]')) {
    button.setAttribute('aria-pressed', String(button.dataset.window === windowKey));
  }
  state.history = null;
  state.historyStatus = 'idle';
  renderCards();
  loadHistory(state.generation);
}

function chartMessage(text, kind = '') {
  $('chart').replaceChildren(h('div', { class: `chart-message ${kind}`, text }));
  $('chart-legend').replaceChildren();
}

/** The line chart of activeNow per module, drawn as inline SVG. */
function renderChart() {
  const box = $('chart');
  const sub = $('chart-sub');
  if (state.historyStatus === 'unavailable') {
    sub.textContent = '';
    chartMessage('History not available: this version of the service has no history endpoint. Live counts and sessions still work.', 'muted');
    return;
  }
  if (!state.history) {
    sub.textContent = WINDOWS[state.windowKey];
    if (state.historyStatus === 'error') chartMessage(`Could not load the history: ${state.historyError?.message ?? 'error'}. Retrying every minute.`, 'error');
    else chartMessage('Loading history…', 'muted');
    return;
  }

  const history = state.history;
  const keys = Object.keys(history.modules ?? {});
  keys.forEach(colorFor);
  const series = keys.map((key) => ({
    key,
    samples: (history.modules[key].samples ?? [])
      .map((sample) => ({ at: Date.parse(sample.at), value: Number(sample.activeNow) }))
      .filter((sample) => Number.isFinite(sample.at) && Number.isFinite(sample.value))
      .sort((a, b) => a.at - b.at),
  }));
  const all = series.flatMap((s) => s.samples);

  // Time axis: the window, but starting at the first sample when the service
  // has not been up that long (at least 15 minutes, so a young service's line
  // does not stretch across the whole chart).
  const end = Number.isFinite(Date.parse(history.timestamp)) ? Date.parse(history.timestamp) : serverNow();
  const windowStart = end - (WINDOW_MS[history.window] ?? WINDOW_MS[state.windowKey]);
  const first = all.length ? Math.min(...all.map((s) => s.at)) : end;
  const start = Math.max(windowStart, Math.min(first, end - MIN_CHART_SPAN_MS));
  const label = WINDOWS[history.window] ?? history.window;
  sub.textContent = all.length && first > windowStart + 60_000 ? `${label} · data since ${fmtClock(first)}` : label;
  if (state.historyStatus === 'error') sub.textContent += ` · last refresh failed (${state.historyError?.message ?? 'error'})`;

  const width = Math.max(260, Math.floor(box.clientWidth || 600));
  state.chartWidth = width;
  const height = width < 480 ? 190 : 250;
  const margin = { top: 10, right: 14, bottom: 26, left: 34 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;

  const maxValue = Math.max(1, ...all.map((s) => s.value));
  const yStep = niceStep(maxValue / 4);
  const yMax = Math.ceil(maxValue / yStep) * yStep;
  const x = (t) => margin.left + ((t - start) / Math.max(1, end - start)) * plotW;
  const y = (v) => margin.top + plotH - (v / yMax) * plotH;

  const root = svg('svg', {
    class: 'chart-svg', 'data-chart': history.window, width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': `Active users per module, ${label}`,
  });

  // Grid and y labels.
  for (let v = 0; v <= yMax; v += yStep) {
    root.append(svg('line', { class: v === 0 ? 'axis' : 'grid', x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v) }));
    const text = svg('text', { class: 'tick', x: margin.left - 8, y: y(v) + 4, 'text-anchor': 'end' });
    text.textContent = fmtNumber(v);
    root.append(text);
  }
  // Time labels, on round local times.
  const stepMs = timeStep(end - start, Math.max(2, Math.floor(plotW / 72)));
  const offset = new Date(start).getTimezoneOffset() * 60_000;
  for (let t = Math.ceil((start - offset) / stepMs) * stepMs + offset; t <= end; t += stepMs) {
    root.append(svg('line', { class: 'tick-mark', x1: x(t), x2: x(t), y1: margin.top + plotH, y2: margin.top + plotH + 4 }));
    // Labels near an edge are anchored inside the chart rather than centred.
    const anchor = x(t) > width - 34 ? 'end' : x(t) < margin.left + 20 ? 'start' : 'middle';
    const text = svg('text', { class: 'tick', x: anchor === 'end' ? width - 2 : x(t), y: height - 6, 'text-anchor': anchor });
    text.textContent = fmtClock(t);
    root.append(text);
  }

  // One line (and a faint area) per module; a gap in the samples (the
  // service was down) breaks the line rather than drawing across it.
  for (const { key, samples } of series) {
    const color = colorFor(key);
    const segments = [];
    for (const sample of samples) {
      const last = segments.at(-1);
      if (last && sample.at - last.at(-1).at <= SAMPLE_GAP_MS) last.push(sample);
      else segments.push([sample]);
    }
    let line = '';
    let area = '';
    for (const segment of segments) {
      const points = segment.map((s) => `${x(s.at).toFixed(1)},${y(s.value).toFixed(1)}`);
      line += `M${points.join('L')}`;
      area += `M${x(segment[0].at).toFixed(1)},${y(0)}L${points.join('L')}L${x(segment.at(-1).at).toFixed(1)},${y(0)}Z`;
    }
    if (line) {
      root.append(svg('path', { class: 'area', d: area, fill: color }));
      root.append(svg('path', { class: 'series', 'data-module': key, d: line, stroke: color }));
    }
    // A lone sample (or the latest one) gets a dot, so it is visible.
    for (const segment of segments) {
      if (segment.length === 1) root.append(svg('circle', { class: 'dot', cx: x(segment[0].at), cy: y(segment[0].value), r: 3, fill: color }));
    }
    const latest = samples.at(-1);
    if (latest) root.append(svg('circle', { class: 'dot last', cx: x(latest.at), cy: y(latest.value), r: 3.5, fill: color }));
  }

  // Hover: a guide line and a tooltip with every module's value at that minute.
  const guide = svg('line', { class: 'guide', y1: margin.top, y2: margin.top + plotH, visibility: 'hidden' });
  const hit = svg('rect', { class: 'hit', x: margin.left, y: margin.top, width: plotW, height: plotH });
  root.append(guide, hit);
  const tooltip = h('div', { class: 'tooltip', hidden: true });

  const children = [root, tooltip];
  if (all.length === 0) {
    children.push(h('div', { class: 'chart-overlay', text: 'No samples yet: the service records one a minute.' }));
  }
  box.replaceChildren(...children);

  hit.addEventListener('pointermove', (event) => {
    const bounds = root.getBoundingClientRect();
    const px = event.clientX - bounds.left;
    const t = start + ((px - margin.left) / plotW) * (end - start);
    const rows = series.map(({ key, samples }) => ({ key, sample: nearest(samples, t) })).filter((r) => r.sample);
    if (rows.length === 0) return;
    const at = rows[0].sample.at;
    guide.setAttribute('x1', x(at));
    guide.setAttribute('x2', x(at));
    guide.setAttribute('visibility', 'visible');
    tooltip.replaceChildren(h('div', { class: 'tooltip-time', text: fmtClock(at) }),
      ...rows.map(({ key, sample }) => h('div', { class: 'tooltip-row' },
        h('span', { class: 'swatch', style: `background:${colorFor(key)}` }),
        h('span', { class: 'tooltip-name', text: key }),
        h('b', { text: fmtNumber(sample.value) }))));
    tooltip.hidden = false;
    // Beside the pointer, flipped to the left near the right edge.
    const left = x(at) + 12 + tooltip.offsetWidth > width ? x(at) - 12 - tooltip.offsetWidth : x(at) + 12;
    tooltip.style.left = `${Math.max(0, left)}px`;
    tooltip.style.top = `${margin.top}px`;
  });
  hit.addEventListener('pointerleave', () => {
    guide.setAttribute('visibility', 'hidden');
    tooltip.hidden = true;
  });

  $('chart-legend').replaceChildren(...series.map(({ key }) => h('li', {},
    h('span', { class: 'swatch', style: `background:${colorFor(key)}` }),
    h('span', { text: key }))));
}

/** The sample nearest to time t (samples sorted by time). */
function nearest(samples, t) {
  let best = null;
  for (const sample of samples) {
    if (!best || Math.abs(sample.at - t) < Math.abs(best.at - t)) best = sample;
  }
  return best;
}

/** A whole step of 1, 2 or 5 × 10^n, at least `rough`. */
function niceStep(rough) {
  if (rough <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough);
}

/** The smallest round time step that gives at most `maxTicks` labels over `spanMs`. */
function timeStep(spanMs, maxTicks) {
  const minutes = [1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720];
  const step = minutes.find((m) => spanMs / (m * 60_000) <= maxTicks) ?? 1440;
  return step * 60_000;
}

// ----------------------------------------------------------- distribution

/** Bars of each module's share of the users active now. */
function renderDistribution() {
  const list = $('distribution');
  const sub = $('dist-sub');
  let shares;
  if (state.stats) {
    // The same share as history's `distribution`, but from the live counts,
    // so it never lags the cards above.
    const keys = moduleKeys();
    const total = keys.reduce((sum, key) => sum + (state.stats[key]?.activeNow ?? 0), 0);
    shares = Object.fromEntries(keys.map((key) => [key, total ? (state.stats[key]?.activeNow ?? 0) / total : 0]));
    sub.textContent = 'Share of active users per module · from the live counts';
  } else if (state.history?.distribution) {
    shares = state.history.distribution;
    const at = Date.parse(state.history.timestamp);
    sub.textContent = `Share of active users per module · as of ${Number.isFinite(at) ? fmtClock(at) : 'now'}`;
  } else {
    $('donut').replaceChildren();
    list.replaceChildren(h('li', { class: 'muted', text: state.historyStatus === 'error' ? 'Not available right now.' : 'Loading…' }));
    return;
  }
  const keys = Object.keys(shares);
  const nobody = keys.every((key) => !shares[key]);
  renderDonut(keys.map((key) => ({ key, share: Math.max(0, Number(shares[key]) || 0) })));
  list.replaceChildren(...keys.map((key) => {
    const share = Math.max(0, Math.min(1, Number(shares[key]) || 0));
    const percent = `${Math.round(share * 100)} %`;
    return h('li', { 'data-module': key },
      h('div', { class: 'bar-label' }, h('span', { text: key }), h('b', { text: percent })),
      h('div', { class: 'bar-track', role: 'presentation' },
        h('div', { class: 'bar-fill', style: `width:${(share * 100).toFixed(1)}%;background:${colorFor(key)}` })));
  }));
  if (nobody) list.append(h('li', { class: 'muted small', text: 'Nobody is active right now.' }));
}

/** A ring of the shares; the middle names the module with the largest one. */
function renderDonut(parts) {
  const total = parts.reduce((sum, part) => sum + part.share, 0);
  const size = 132;
  const radius = 52;
  const root = svg('svg', { class: 'donut-svg', width: size, height: size, viewBox: `0 0 ${size} ${size}`, 'aria-hidden': 'true' });
  root.append(svg('circle', { class: 'donut-track', cx: size / 2, cy: size / 2, r: radius }));
  // Each part is the same circle with a dash as long as its share, rotated
  // to start where the previous one ended (pathLength 100 makes dashes percent).
  let offset = 0;
  for (const { key, share } of parts) {
    if (!total || !share) continue;
    const percent = (share / total) * 100;
    root.append(svg('circle', {
      class: 'donut-part', cx: size / 2, cy: size / 2, r: radius, pathLength: 100, stroke: colorFor(key),
      'stroke-dasharray': `${percent} ${100 - percent}`, 'stroke-dashoffset': 25 - offset,
    }));
    offset += percent;
  }
  const top = total ? parts.reduce((best, part) => (part.share > best.share ? part : best)) : null;
  const value = svg('text', { class: 'donut-value', x: size / 2, y: size / 2 + (top ? 2 : 6), 'text-anchor': 'middle' });
  value.textContent = top ? `${Math.round((top.share / total) * 100)} %` : '–';
  root.append(value);
  if (top) {
    const name = svg('text', { class: 'donut-name', x: size / 2, y: size / 2 + 20, 'text-anchor': 'middle' });
    name.textContent = top.key.length > 14 ? `${top.key.slice(0, 13)}…` : top.key;
    root.append(name);
  }
  $('donut').replaceChildren(root);
}

// --------------------------------------------------------------- webhooks

/** Shows each webhook endpoint's delivery; a failed read leaves the card as it was. */
async function loadWebhooks(gen) {
  let answer;
  try {
    answer = await getJson('/api/admin/webhooks');
  } catch (error) {
    console.debug('[presence admin] webhooks', error);
    return;
  }
  if (gen !== state.generation) return;
  const endpoints = answer.endpoints ?? [];
  $('webhooks').hidden = endpoints.length === 0;
  const ago = (at) => (at ? fmtAgo(Date.parse(at)) : '—');
  $('webhooks-body').replaceChildren(...endpoints.map((e) => {
    const failure = e.lastFailure
      ? `${e.lastFailure.error} (${ago(e.lastFailure.at)})`
      : '—';
    return h('tr', {},
      h('td', { text: e.url }),
      h('td', { text: String(e.eventsWaiting) }),
      h('td', { text: e.oldestEventAgeSeconds == null ? '—' : fmtDuration(e.oldestEventAgeSeconds) }),
      h('td', { text: ago(e.lastDeliveryAt) }),
      h('td', { text: failure }));
  }));
}

// --------------------------------------------------------------- sessions

async function loadSessions(gen) {
  const cursor = state.cursors.at(-1);
  const query = new URLSearchParams({ limit: String(state.pageSize) });
  if (cursor) query.set('cursor', cursor);
  let page;
  try {
    page = await getJson(`/api/admin/sessions?${query}`);
  } catch (error) {
    // A cursor the service no longer accepts: back to the first page.
    if (error instanceof HttpError && error.status === 400 && cursor && gen === state.generation) {
      state.cursors = [null];
      return loadSessions(gen);
    }
    throw error;
  }
  if (gen !== state.generation || cursor !== state.cursors.at(-1)) return;
  // Everyone on this later page has gone: show the first page instead.
  if (page.sessions.length === 0 && state.cursors.length > 1) {
    state.cursors = [null];
    return loadSessions(gen);
  }
  state.page = page;
  state.pageError = null;
  for (const session of page.sessions) state.seenModules.add(session.module);
  renderSessions();
}

function renderFilterOptions() {
  const select = $('module-filter');
  const codes = [...state.seenModules].sort();
  const have = [...select.options].slice(1).map((option) => option.value);
  if (codes.join('\n') === have.join('\n')) return;
  select.replaceChildren(h('option', { value: '', text: 'All modules' }),
    ...codes.map((code) => h('option', { value: code, text: code })));
  select.value = state.filter;
}

function renderSessions() {
  renderFilterOptions();
  const body = $('sessions-body');
  const note = $('sessions-note');
  const empty = $('sessions-empty');
  const page = state.page;
  const pageNumber = state.cursors.length;

  $('prev-page').disabled = pageNumber <= 1;
  $('next-page').disabled = !page?.nextCursor;
  $('page-label').textContent = `Page ${pageNumber}`;

  const sessions = page?.sessions ?? [];
  const shown = state.filter ? sessions.filter((s) => s.module === state.filter) : sessions;

  const notes = [];
  if (state.pageError) notes.push(`Could not refresh the list (${state.pageError.message}); retrying every 15 s.`);
  if (state.filter) {
    notes.push(`Filtered by module ${state.filter}: ${shown.length} of ${sessions.length} sessions on this page. The filter applies to the page shown; other pages may have more.`);
  }
  note.textContent = notes.join(' ');
  note.hidden = notes.length === 0;
  note.classList.toggle('error', Boolean(state.pageError));

  body.replaceChildren(...shown.map(sessionRow));
  $('sessions-table').hidden = shown.length === 0;
  empty.hidden = shown.length > 0 || !page;
  if (!page) empty.textContent = '';
  else if (sessions.length === 0) empty.textContent = 'No live sessions. They appear here as soon as someone sends a heartbeat.';
  else empty.textContent = `No ${state.filter} sessions on this page.`;
}

function sessionRow(session) {
  const started = Date.parse(session.startedAt);
  const lastSeen = Date.parse(session.lastSeen);
  const missing = () => h('span', { class: 'muted', text: '—' });
  return h('tr', { 'data-user': session.userId, class: session.page || session.resource ? null : 'no-location' },
    h('td', { 'data-label': 'User' },
      h('span', { class: 'user', text: session.userId }),
      session.clientId ? h('span', { class: 'client muted small', title: 'client id', text: session.clientId }) : null),
    h('td', { 'data-label': 'Module' }, h('span', { class: 'module-tag', text: session.module })),
    h('td', { 'data-label': 'State' },
      h('span', { class: `state ${session.state === 'idle' ? 'idle' : 'active'}`, text: session.state ?? 'active' })),
    h('td', { 'data-label': 'Page', class: 'wrap' }, session.page ? h('code', { text: session.page }) : missing()),
    h('td', { 'data-label': 'Resource', class: 'wrap' }, session.resource ? h('code', { text: session.resource }) : missing()),
    h('td', { 'data-label': 'Since' },
      h('time', { datetime: session.startedAt, title: fmtDateTime(started), text: fmtClock(started) }),
      h('span', { class: 'muted small', 'data-for': started, text: ` · ${fmtDuration((serverNow() - started) / 1000)}` })),
    h('td', { 'data-label': 'Last seen' },
      h('time', { datetime: session.lastSeen, title: fmtDateTime(lastSeen), 'data-ago': lastSeen, text: fmtAgo(lastSeen) })));
}

/** Moves the relative times ("12 s ago", "· 3 min") on without refetching. */
function tickClocks() {
  for (const node of document.querySelectorAll('[data-ago]')) node.textContent = fmtAgo(Number(node.dataset.ago));
  for (const node of document.querySelectorAll('[data-for]')) {
    node.textContent = ` · ${fmtDuration((serverNow() - Number(node.dataset.for)) / 1000)}`;
  }
}

function changePage(delta) {
  const gen = state.generation;
  if (delta > 0 && state.page?.nextCursor) state.cursors.push(state.page.nextCursor);
  else if (delta < 0 && state.cursors.length > 1) state.cursors.pop();
  else return;
  $('prev-page').disabled = true;
  $('next-page').disabled = true;
  loadSessions(gen).catch((error) => onLoadError(error, gen));
}

// ----------------------------------------------------------------- wiring

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  // People paste "Bearer eyJ…" too.
  const token = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
  if (!token) return;
  storageSet('sessionStorage', PASTED_TOKEN_KEY, token);
  start();
});
$('gate-cancel').addEventListener('click', () => start());
$('gate-forget').addEventListener('click', () => {
  storageSet('sessionStorage', PASTED_TOKEN_KEY, null);
  start(); // on with the site's login token, or the sign-in card
});
$('change-token').addEventListener('click', () => {
  stop();
  showGate('change');
});
for (const button of document.querySelectorAll('[data-window]')) {
  button.addEventListener('click', () => chooseWindow(button.dataset.window));
}
$('module-filter').addEventListener('change', (event) => {
  state.filter = event.target.value;
  renderSessions();
});
$('page-size').addEventListener('change', (event) => {
  state.pageSize = Number(event.target.value);
  savePrefs();
  state.cursors = [null];
  const gen = state.generation;
  loadSessions(gen).catch((error) => onLoadError(error, gen));
});
$('sessions-refresh').addEventListener('click', () => {
  const gen = state.generation;
  loadSessions(gen).catch((error) => onLoadError(error, gen));
});
$('prev-page').addEventListener('click', () => changePage(-1));
$('next-page').addEventListener('click', () => changePage(1));

// Redraw the chart when its box changes width (window resize, phone rotation).
new ResizeObserver(() => {
  const width = Math.floor($('chart').clientWidth);
  if (state.history && width && width !== state.chartWidth) renderChart();
}).observe($('chart'));

loadPrefs();
start();
