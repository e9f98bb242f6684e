// The geolb status page. Plain JavaScript, no dependencies; every piece of data comes
// from the admin API with the token the page asks for when the API answers 401.
'use strict';

const TOKEN_KEY = 'geolb-admin-token';
const REFRESH_MS = 5000;
const SITES_PAGE = 50;
const POOLS_PAGE = 20;
const TENANTS_PAGE = 50;

const $ = (id) => document.getElementById(id);

const state = {
  topology: null,
  health: null,
  sitesPage: 0,
  poolsPage: 0,
  explained: new Map(), // "zone/pool" -> explain result for the current client
  explainClient: null,
  tenantCursors: [],
  tenantNext: null,
  refreshTimer: null,
  refreshing: false,
};

// --- Elements -------------------------------------------------------------------------

// Builds an element; children are nodes or strings (always text, never HTML).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (key in node && key !== 'list') node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS('http' + '://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function showError(message) {
  const box = $('error');
  box.textContent = message || '';
  box.hidden = !message;
}

function pager(container, page, pages, total, noun, go) {
  container.replaceChildren(
    el('button', { type: 'button', disabled: page <= 0, onclick: () => go(page - 1) }, '‹ Previous'),
    el('span', { class: 'muted' },
      pages > 1 ? `page ${page + 1} of ${pages}, ${total} ${noun}` : `${total} ${noun}`),
    el('button', { type: 'button', disabled: page >= pages - 1, onclick: () => go(page + 1) }, 'Next ›'),
  );
}

function fillSelect(select, options, keep) {
  const previous = keep ? select.value : null;
  select.replaceChildren(...options.map(([value, label]) => el('option', { value }, label)));
  if (previous !== null && options.some(([value]) => value === previous)) select.value = previous;
}

// --- API ------------------------------------------------------------------------------

let tokenPrompt = null;

// Shows the token dialog once for all the calls waiting on it; resolves when a token is
// entered. `rejected` says the previous token was refused.
function askToken(rejected) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const dialog = $('login');
      $('login-why').textContent = rejected
        ? 'The token was not accepted. Enter the admin token (the contents of admin_token_file):'
        : 'This server needs its admin token (the contents of admin_token_file). It is kept in this tab\'s session storage only.';
      $('login-token').value = '';
      $('login-form').onsubmit = (event) => {
        event.preventDefault();
        const token = $('login-token').value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        dialog.close();
        tokenPrompt = null;
        resolve();
      };
      if (!dialog.open) dialog.showModal();
      $('login-token').focus();
    });
  }
  return tokenPrompt;
}

// One API call: JSON in and out, the bearer token when there is one; a 401 asks for the
// token and retries.
async function api(method, path, body) {
  for (;;) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    if (response.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      await askToken(Boolean(token));
      continue;
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }
}

const enc = encodeURIComponent;

// --- Sites ----------------------------------------------------------------------------

// What the page shows for a site: drained (an operator drain), overridden (forced up or
// down by an operator), else what health checks say.
function shownState(site) {
  if (site.state === 'drain') return 'drain';
  if (site.override) return 'overridden';
  return site.state;
}

const STATE_LABEL = { up: 'up', down: 'down', drain: 'drained', overridden: 'overridden' };

function allSites() {
  const out = [];
  if (!state.health) return out;
  const topo = new Map();
  for (const zone of (state.topology && state.topology.zones) || []) {
    for (const site of zone.sites) topo.set(zone.zone + '/' + site.site, site);
  }
  for (const zone of state.health.zones) {
    for (const site of zone.sites) {
      out.push({ zone: zone.zone, ...site, where: topo.get(zone.zone + '/' + site.site) || {} });
    }
  }
  return out;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return '';
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

async function setOverride(zone, site, value, button) {
  button.disabled = true;
  try {
    await api('PUT', `/v1/zones/${enc(zone)}/sites/${enc(site)}/override`, { state: value });
    showError('');
    await refreshHealth();
  } catch (error) {
    showError(`${zone}/${site}: ${error.message}`);
    button.disabled = false;
  }
}

function renderSites() {
  const zone = $('sites-zone').value;
  const wanted = $('sites-state').value;
  const text = $('sites-filter').value.trim().toLowerCase();
  const sites = allSites().filter((s) =>
    (!zone || s.zone === zone)
    && (!wanted || shownState(s) === wanted)
    && (!text || s.site.toLowerCase().includes(text)));
  const counts = { up: 0, down: 0, drain: 0, overridden: 0 };
  for (const s of allSites()) counts[shownState(s)] = (counts[shownState(s)] || 0) + 1;
  $('sites-summary').textContent =
    `${counts.up} up, ${counts.down} down, ${counts.drain} drained, ${counts.overridden} overridden`;
  const pages = Math.max(1, Math.ceil(sites.length / SITES_PAGE));
  state.sitesPage = Math.min(state.sitesPage, pages - 1);
  const page = sites.slice(state.sitesPage * SITES_PAGE, (state.sitesPage + 1) * SITES_PAGE);
  replaceRows($('sites').tBodies[0], page.map((s) => {
    const shown = shownState(s);
    const probe = s.probe;
    let result = '';
    if (probe) {
      if (probe.last_ok === true) result = 'ok';
      else if (probe.last_ok === false) result = probe.last_reason || 'failed';
      else result = 'not probed yet';
    }
    const action = s.override
      ? el('button', { type: 'button', class: 'undrain', onclick: (e) => setOverride(s.zone, s.site, 'auto', e.target) },
        s.override === 'drain' ? 'Undrain' : 'Clear override')
      : el('button', { type: 'button', class: 'drain', onclick: (e) => setOverride(s.zone, s.site, 'drain', e.target) }, 'Drain');
    return el('tr', { 'data-zone': s.zone, 'data-site': s.site, 'data-state': shown },
      el('td', {}, s.zone),
      el('td', { title: (s.where.addresses || []).join(' ') }, s.site),
      el('td', {}, el('span', { class: `badge ${shown}` }, STATE_LABEL[shown] || shown)),
      el('td', {}, s.override || ''),
      el('td', {}, probe ? `${probe.check}: ${probe.health}` : 'no check'),
      el('td', { class: 'result' }, result),
      el('td', { class: 'num' }, probe && probe.last_latency_ms !== null ? `${probe.last_latency_ms.toFixed(1)} ms` : ''),
      el('td', {}, probe ? ago(probe.last_probe) : ''),
      el('td', {}, action));
  }));
  pager($('sites-pager'), state.sitesPage, pages, sites.length, 'sites', (p) => { state.sitesPage = p; renderSites(); });
}

// --- Map ------------------------------------------------------------------------------

function renderMap() {
  const group = $('map-sites');
  const sites = allSites();
  const placed = sites.filter((s) => typeof s.where.lat === 'number' && typeof s.where.lon === 'number');
  // Worse states drawn last, on top.
  const order = { up: 0, overridden: 1, drain: 2, down: 3 };
  placed.sort((a, b) => order[shownState(a)] - order[shownState(b)]);
  group.replaceChildren(...placed.map((s) => {
    const shown = shownState(s);
    return svg('circle', {
      cx: ((s.where.lon + 180) * 10).toFixed(1),
      cy: ((90 - s.where.lat) * 10).toFixed(1),
      r: 16,
      class: shown,
      'data-site': s.site,
      'data-zone': s.zone,
      onclick: () => { $('sites-filter').value = s.site; state.sitesPage = 0; renderSites(); },
    }, svg('title', {}, `${s.zone} / ${s.site}: ${STATE_LABEL[shown]}`));
  }));
  // 85 N to 60 S unless a site lies beyond (the land outline covers both poles).
  let north = 85;
  let south = -60;
  for (const s of placed) {
    north = Math.max(north, Math.min(90, s.where.lat + 5));
    south = Math.min(south, Math.max(-90, s.where.lat - 5));
  }
  $('map').setAttribute('viewBox', `0 ${(90 - north) * 10} 3600 ${(north - south) * 10}`);
  const missing = sites.length - placed.length;
  $('map-note').textContent = missing > 0 ? `${missing} site(s) without a location are not on the map.` : '';
}

// --- Pools ----------------------------------------------------------------------------

function poolZone() {
  const name = $('pools-zone').value;
  return ((state.topology && state.topology.zones) || []).find((z) => z.zone === name);
}

function reasonsFor(result, zone, pool) {
  if (!result) return null;
  if (result.error) return el('span', { class: 'error-text' }, result.error);
  const decision = result.decision || {};
  const picks = (decision.pools || []).filter((p) => p.zone === zone && p.pool === pool && !p.additional);
  const items = [];
  if (decision.tenant) items.push(el('li', {}, `tenant ${decision.tenant.tenant || ''} → shard ${decision.tenant.shard || ''}`));
  for (const pick of picks) {
    items.push(el('li', {}, `${pick.family}: ${pick.policy}, ${pick.candidates} candidate(s), ${pick.answers} answer(s)`));
    if (pick.region && pick.region.rule === 'none') {
      items.push(el('li', {}, 'no region rule applies: sites by distance from the client'));
    } else if (pick.region) {
      const sites = (pick.region.sites || []).join(', ') || 'no candidate';
      items.push(el('li', {}, `region rule ${pick.region.rule}${pick.region.key ? ' ' + pick.region.key : ''}: ${sites}, then the rest by distance`));
    }
    if (pick.all_down) items.push(el('li', {}, `every site down: ${pick.failed || pick.when_all_down}`));
    else if (pick.failed) items.push(el('li', {}, `failed ${pick.failed}`));
    for (const site of pick.sites || []) {
      const detail = [];
      if (site.distance_km !== null && site.distance_km !== undefined) detail.push(`${Math.round(site.distance_km)} km`);
      if (site.weight !== null && site.weight !== undefined) detail.push(`weight ${site.weight}`);
      if (site.score !== null && site.score !== undefined) detail.push(`score ${site.score}`);
      if (site.latency_ms !== null && site.latency_ms !== undefined) detail.push(`${site.latency_ms} ms`);
      if (site.reported_weight !== null && site.reported_weight !== undefined) detail.push(`reported ${site.reported_weight}`);
      const answered = site.answered && site.answered.length > 0;
      items.push(el('li', { class: answered ? 'answered' : 'skipped' },
        `${site.site} (${site.state}${site.override ? ', override ' + site.override : ''}${detail.length ? ', ' + detail.join(', ') : ''}): ${site.reason}`));
    }
  }
  if (picks.length === 0) items.push(el('li', {}, `rcode ${result.rcode}; this name was not answered by the pool`));
  return el('ul', { class: 'reasons' }, items);
}

function renderPools() {
  const zone = poolZone();
  const pools = zone ? zone.pools : [];
  const pages = Math.max(1, Math.ceil(pools.length / POOLS_PAGE));
  state.poolsPage = Math.min(state.poolsPage, pages - 1);
  const page = pools.slice(state.poolsPage * POOLS_PAGE, (state.poolsPage + 1) * POOLS_PAGE);
  replaceRows($('pools').tBodies[0], page.map((p) => {
    const result = state.explained.get(zone.zone + '/' + p.pool);
    const answer = result && !result.error
      ? (result.answer.length ? result.answer.map((line) => el('div', {}, line.split(' ').slice(2).join(' '))) : `(${result.rcode}, no records)`)
      : '';
    return el('tr', { 'data-pool': p.pool },
      el('td', {}, p.pool, p.shard ? el('div', { class: 'muted' }, `shard ${p.shard}`) : null),
      el('td', {}, p.policy),
      el('td', {}, p.names[0] || '(no name)', p.names.length > 1 ? el('div', { class: 'muted' }, `+${p.names.length - 1} more`) : null),
      el('td', { class: 'answer' }, answer),
      el('td', { class: 'why' }, reasonsFor(result, zone.zone, p.pool)));
  }));
  pager($('pools-pager'), state.poolsPage, pages, pools.length, 'pools', (p) => { state.poolsPage = p; renderPools(); explainPage(); });
}

// Explains the first name of every pool on the current page for the typed client.
async function explainPage() {
  const zone = poolZone();
  const client = state.explainClient;
  if (!zone || client === null) return;
  const type = $('explain-type').value;
  const page = zone.pools.slice(state.poolsPage * POOLS_PAGE, (state.poolsPage + 1) * POOLS_PAGE);
  await Promise.all(page.filter((p) => p.names.length > 0).map(async (p) => {
    const query = `name=${enc(p.names[0])}&type=${enc(type)}${client ? '&client=' + enc(client) : ''}`;
    try {
      state.explained.set(zone.zone + '/' + p.pool, await api('GET', `/v1/explain?${query}`));
    } catch (error) {
      state.explained.set(zone.zone + '/' + p.pool, { error: error.message });
    }
  }));
  renderPools();
}

// --- Tenants --------------------------------------------------------------------------

function tenantZone() {
  return $('tenants-zone').value;
}

async function loadShards() {
  const zone = tenantZone();
  if (!zone) return;
  const summary = await api('GET', `/v1/zones/${enc(zone)}/tenants`);
  $('tenants-summary').textContent = `${summary.tenants} in ${zone}`;
  replaceRows($('shards').tBodies[0], Object.entries(summary.shards).map(([shard, count]) =>
    el('tr', { 'data-shard': shard }, el('td', {}, shard), el('td', { class: 'num' }, count))));
  fillSelect($('tenant-shard'), [['', 'every shard'], ...Object.keys(summary.shards).map((s) => [s, s])], true);
}

async function searchTenants() {
  const zone = tenantZone();
  if (!zone) return;
  const after = state.tenantCursors[state.tenantCursors.length - 1];
  const params = new URLSearchParams({ prefix: $('tenant-prefix').value.trim(), limit: String(TENANTS_PAGE) });
  if ($('tenant-shard').value) params.set('shard', $('tenant-shard').value);
  if (after) params.set('after', after);
  const page = await api('GET', `/v1/zones/${enc(zone)}/tenant-search?${params}`);
  state.tenantNext = page.next;
  const shards = Array.from($('tenant-shard').options).slice(1).map((o) => o.value);
  $('tenant-matched').textContent = `${page.matched} match(es) of ${page.total}`;
  replaceRows($('tenants').tBodies[0], page.tenants.map((t) => {
    const select = el('select', { 'aria-label': `new shard for ${t.tenant}` },
      shards.map((s) => el('option', { value: s, selected: s === t.shard }, s)));
    return el('tr', { 'data-tenant': t.tenant },
      el('td', {}, t.tenant),
      el('td', { class: 'shard' }, t.shard),
      el('td', {}, select, ' ', el('button', {
        type: 'button',
        class: 'move',
        onclick: (e) => moveTenant(t.tenant, select.value, e.target),
      }, 'Move')));
  }));
  const number = state.tenantCursors.length;
  $('tenants-pager').replaceChildren(
    el('button', { type: 'button', disabled: number <= 1, onclick: () => { state.tenantCursors.pop(); searchTenants().catch(report); } }, '‹ Previous'),
    el('span', { class: 'muted' }, `page ${number}`),
    el('button', { type: 'button', disabled: !page.next, onclick: () => { state.tenantCursors.push(state.tenantNext); searchTenants().catch(report); } }, 'Next ›'),
  );
}

async function moveTenant(tenant, shard, button) {
  button.disabled = true;
  try {
    await api('PUT', `/v1/zones/${enc(tenantZone())}/tenants/${enc(tenant)}`, { shard });
    showError('');
    await Promise.all([loadShards(), searchTenants()]);
  } catch (error) {
    showError(`${tenant}: ${error.message}`);
    button.disabled = false;
  }
}

// --- Fleet ----------------------------------------------------------------------------

async function refreshFleet() {
  const panel = $('fleet-panel');
  if (!state.topology || !state.topology.fleet) { panel.hidden = true; return; }
  let view;
  try {
    view = await api('GET', '/v1/cluster');
  } catch (error) {
    if (error.status === 404) { panel.hidden = true; return; }
    throw error;
  }
  panel.hidden = false;
  $('fleet-summary').textContent = `this node ${view.node}, ${view.connected ? 'connected' : 'NOT connected'}, applied revision ${view.applied_revision}`
    + (view.configs_differ ? '; nodes serve different configurations' : '');
  replaceRows($('fleet').tBodies[0], (view.nodes || []).map((n) => el('tr', { 'data-node': n.node },
    el('td', {}, n.node), el('td', { class: 'num' }, n.revision), el('td', { class: 'num' }, n.lag),
    el('td', {}, n.config_digest), el('td', {}, n.version),
    el('td', {}, n.started ? new Date(n.started * 1000).toISOString().replace('.000', '') : ''))));
  replaceRows($('etcd').tBodies[0], (view.etcd || []).map((m) => el('tr', {},
    el('td', {}, m.endpoint), el('td', {}, m.healthy ? 'healthy' : `unhealthy: ${m.error}`),
    el('td', {}, m.version || ''), el('td', { class: 'num' }, m.raft_index ?? ''))));
}

// --- Loading and refreshing -----------------------------------------------------------

function report(error) {
  showError(error.message);
}

async function loadTopology() {
  state.topology = await api('GET', '/v1/topology');
  const topo = state.topology;
  const identity = topo.identity ? ` on ${topo.identity}` : '';
  $('server').textContent = `version ${topo.version}${identity}${topo.geoip ? '' : ' (no GeoIP database)'}`;
  const zones = topo.zones.map((z) => [z.zone, z.zone]);
  fillSelect($('sites-zone'), [['', 'every zone'], ...zones], true);
  fillSelect($('pools-zone'), zones, true);
  const sharded = topo.zones.filter((z) => z.sharding).map((z) => [z.zone, z.zone]);
  fillSelect($('tenants-zone'), sharded, true);
  $('tenants-panel').hidden = sharded.length === 0;
  renderPools();
}

// Whether the sites in /v1/health are the ones the topology describes (else a reload
// changed them).
function topologyCurrent() {
  if (!state.topology || !state.health) return false;
  const key = (zones) => zones.map((z) => z.zone + ':' + z.sites.map((s) => s.site).join(',')).join(';');
  return key(state.topology.zones) === key(state.health.zones);
}

async function refreshHealth() {
  state.health = await api('GET', '/v1/health');
  if (!topologyCurrent()) {
    await loadTopology();
    if (state.explainClient !== null) await explainPage();
  }
  renderSites();
  renderMap();
  $('refreshed').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// `first`: the load when the page opens, done even in a tab opened in the background.
async function refresh(first) {
  clearTimeout(state.refreshTimer);
  // One refresh at a time: a tab becoming visible during one does not start another.
  if (state.refreshing) return;
  // Nothing is fetched while the tab is hidden; becoming visible refreshes at once.
  if (document.hidden && !first) {
    state.refreshTimer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  state.refreshing = true;
  try {
    await refreshHealth();
    await refreshFleet();
    showError('');
  } catch (error) {
    report(error);
  } finally {
    state.refreshing = false;
  }
  state.refreshTimer = setTimeout(refresh, REFRESH_MS);
}

function wire() {
  $('login').addEventListener('cancel', (event) => event.preventDefault());
  $('sites-zone').addEventListener('change', () => { state.sitesPage = 0; renderSites(); });
  $('sites-state').addEventListener('change', () => { state.sitesPage = 0; renderSites(); });
  $('sites-filter').addEventListener('input', () => { state.sitesPage = 0; renderSites(); });
  $('pools-zone').addEventListener('change', () => { state.poolsPage = 0; renderPools(); explainPage().catch(report); });
  $('explain-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.explainClient = $('explain-client').value.trim();
    state.explained.clear();
    explainPage().catch(report);
  });
  $('tenants-zone').addEventListener('change', () => {
    state.tenantCursors = [null];
    loadShards().then(searchTenants).catch(report);
  });
  $('tenant-search').addEventListener('submit', (event) => {
    event.preventDefault();
    state.tenantCursors = [null];
    searchTenants().catch(report);
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(false); });
}

async function start() {
  wire();
  try {
    await loadTopology();
    state.tenantCursors = [null];
    if (tenantZone()) await loadShards().then(searchTenants);
  } catch (error) {
    report(error);
  }
  await refresh(true);
}

start();
