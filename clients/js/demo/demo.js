// The demo page's script (served as /demo/demo.js: the page's
// Content-Security-Policy allows no inline script).
import { createHeartbeatService } from '/demo/presence-client.js';

// Each window is its own user: the demo keeps the token per tab.
const TOKEN_KEY = 'presence.demoToken';
const MODULES = [
  { code: 'pms', key: 'procurement', title: 'Procurement (pms)' },
  { code: 'ih', key: 'innovation', title: 'Innovation Hub (ih)' },
];
const $ = (id) => document.getElementById(id);
const service = createHeartbeatService({
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
}

$('signin').addEventListener('click', () => signIn($('name').value.trim() || 'guest'));
$('modules').addEventListener('click', (e) => {
  const code = e.target?.dataset?.enter;
  if (code) { service.startHeartbeat(code); showHere(); }
});
$('leave').addEventListener('click', () => { service.stopHeartbeat(); showHere(); });

const remembered = sessionStorage.getItem('presence.demoUser');
const name = remembered ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
$('name').value = name;
signIn(name);
