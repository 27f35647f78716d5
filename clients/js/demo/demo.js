// The demo page's script (served as /demo/demo.js: the page's
// Content-Security-Policy allows no inline script).
//
// Module cards with live counts (subscribeModuleStats), and requests: opening
// one calls setResource, and the page lists the request's viewers with their
// name and state, live through subscribePresence (one presence stream for the
// page, falling back to polling the viewers).
import { createHeartbeatService } from '/demo/presence-client.js';

// Each window is its own user: the demo keeps the token per tab.
const TOKEN_KEY = 'presence.demoToken';
const MODULES = [
  { code: 'pms', key: 'procurement', title: 'Procurement (pms)' },
  { code: 'ih', key: 'innovation', title: 'Innovation Hub (ih)' },
];
const RESOURCES = ['request:101', 'request:102', 'request:103'];
const $ = (id) => document.getElementById(id);
// `?idleAfterMs=5000` shows the idle state without waiting a minute.
const idleAfterMs = Number(new URLSearchParams(location.search).get('idleAfterMs')) || undefined;
const service = createHeartbeatService({
  idleAfterMs,
  getToken: () => sessionStorage.getItem(TOKEN_KEY),
  onError: (e) => { $('status').textContent = String(e.message ?? e); },
});

for (const m of MODULES) {
  const card = document.createElement('div');
  card.className = 'card';
  card.id = `card-${m.code}`;
  card.innerHTML = `<h2></h2>
    <div class="stats">
      <div class="stat"><b data-count="activeNow">–</b><span>active now</span></div>
      <div class="stat"><b data-count="idleNow">–</b><span>of them idle</span></div>
      <div class="stat"><b data-count="today">–</b><span>today</span></div>
      <div class="stat"><b data-count="totalUsers">–</b><span>in total</span></div>
    </div>
    <button data-enter="${m.code}">Enter</button>`;
  card.querySelector('h2').textContent = m.title;
  $('modules').append(card);
}

function show(stats) {
  for (const m of MODULES) {
    const counts = stats[m.key] ?? {};
    for (const el of document.querySelectorAll(`#card-${m.code} [data-count]`)) {
      el.textContent = counts[el.dataset.count] ?? 0;
    }
  }
  $('status').textContent = `Live · updated ${new Date(stats.timestamp).toLocaleTimeString()}`;
}

function showHere() {
  const here = service.getCurrentModule();
  for (const m of MODULES) $(`card-${m.code}`).classList.toggle('here', m.code === here);
  $('leave').disabled = here === null;
  const open = service.getResource();
  for (const button of $('picker').querySelectorAll('[data-resource]')) {
    button.classList.toggle('open', button.dataset.resource === open);
  }
  $('close').disabled = open === null;
  showMyState();
}

function showMyState() {
  const el = $('mystate');
  el.textContent = service.getCurrentModule() === null ? '' : service.getState();
  el.className = `state ${el.textContent}`;
}

for (const resource of RESOURCES) {
  const button = document.createElement('button');
  button.className = 'secondary';
  button.dataset.resource = resource;
  button.textContent = resource;
  $('picker').append(button);
}
const close = document.createElement('button');
close.id = 'close';
close.className = 'secondary';
close.textContent = 'Close request';
$('picker').append(close);

// The viewers of the open request, live: one subscription, replaced when
// another request is opened.
let stopViewers = () => {};

function watchViewers() {
  stopViewers();
  stopViewers = () => {};
  const resource = service.getResource();
  if (resource === null || sessionStorage.getItem(TOKEN_KEY) === null) { showViewers(null); return; }
  stopViewers = service.subscribePresence([resource], (body) => {
    if (body.resource === service.getResource()) showViewers(body);
  });
}

function showViewers(body) {
  const list = $('viewers');
  if (body === null) {
    $('viewing').textContent = 'No request open.';
    list.replaceChildren();
    return;
  }
  const viewers = body.viewers ?? [];
  const count = body.count ?? viewers.length;
  const more = count > viewers.length ? `, ${viewers.length} listed` : '';
  $('viewing').textContent = `${body.resource}: ${count} viewing${more}`;
  const me = sessionStorage.getItem('presence.demoUser');
  list.replaceChildren(...viewers.map((viewer) => {
    const item = document.createElement('li');
    item.className = 'viewer';
    item.dataset.user = viewer.userId;
    const name = document.createElement('span');
    name.className = 'name';
    // The profile's name (the token's `name` claim), else the bare user id.
    name.textContent = viewer.profile?.name ?? viewer.userId;
    name.dataset.from = viewer.profile?.name ? 'profile' : 'userId';
    name.title = `user id ${viewer.userId}, here since ${new Date(viewer.since).toLocaleTimeString()}`;
    const state = document.createElement('span');
    state.className = `state ${viewer.state ?? ''}`;
    state.textContent = viewer.state ?? 'state unknown';
    item.append(name, state);
    if (viewer.userId === me) {
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = '(you)';
      item.append(you);
    }
    return item;
  }));
}

function openResource(resource) {
  service.setResource(resource);
  // A request lives in Procurement: opening one from outside any module enters it.
  if (resource !== null && service.getCurrentModule() === null) service.startHeartbeat('pms');
  showHere();
  watchViewers();
}

let unsubscribe = () => {};
async function signIn(name) {
  const response = await fetch(`/demo/token?user=${encodeURIComponent(name)}`);
  if (!response.ok) { $('status').textContent = 'Could not get a demo token.'; return; }
  const { token } = await response.json();
  service.stopHeartbeat();
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem('presence.demoUser', name);
  $('whoami').textContent = `signed in as ${name}`;
  unsubscribe();
  unsubscribe = service.subscribeModuleStats(show);
  showHere();
  // The new token's subscription: the stream reopens with it.
  watchViewers();
}

$('signin').addEventListener('click', () => signIn($('name').value.trim() || 'guest'));
$('modules').addEventListener('click', (e) => {
  const code = e.target?.dataset?.enter;
  if (code) { service.startHeartbeat(code); showHere(); }
});
$('leave').addEventListener('click', () => { service.stopHeartbeat(); showHere(); });
$('picker').addEventListener('click', (e) => {
  if (e.target?.dataset?.resource) openResource(e.target.dataset.resource);
  else if (e.target?.id === 'close') openResource(null);
});
document.addEventListener('visibilitychange', showMyState);
// The client has no state callback: the demo looks every second.
setInterval(showMyState, 1000);

const remembered = sessionStorage.getItem('presence.demoUser');
const name = remembered ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
$('name').value = name;
signIn(name);
