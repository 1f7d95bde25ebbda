// berth's dashboard: plain JavaScript over the admin API of the same origin (/api/v1).
// Every list is paged by the server (its cursors); the page holds one page of sessions at a
// time, so it stays as fast with a million sessions as with ten. Data from the broker goes
// into the page as text (textContent), never as HTML.
'use strict';

const POLL_MS = 3000;
const state = {
  stats: null, // the last /stats reading: { at: ms, total: {...} }
  pollTimer: null,
  filters: {},
  cursor: null, // the cursor of the page shown (null: the first page)
  before: [], // the cursors of the pages before it, for "Previous page"
  nextCursor: null,
  detailId: null,
};

// ---- helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function say(message, isError) {
  const status = document.getElementById('status');
  status.textContent = message;
  status.className = isError ? 'error' : '';
}

class ApiError extends Error {
  constructor(message, status, noRoute) {
    super(message);
    this.status = status;
    // 404 because this berth has no such route (rather than no such session).
    this.noRoute = noRoute;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const reply = await fetch(path, init);
  let data = null;
  try {
    data = await reply.json();
  } catch (_) {
    data = null;
  }
  if (!reply.ok) {
    const why = (data && data.error) || `HTTP ${reply.status}`;
    const noRoute = reply.status === 404 && /^no route/.test(why);
    throw new ApiError(`${method} ${path}: ${why}`, reply.status, noRoute);
  }
  return data;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

const clientPath = (id) => `/api/v1/clients/${encodeURIComponent(id)}`;

function number(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : '—';
}

function bytes(n) {
  if (typeof n !== 'number') return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function time(ms) {
  if (typeof ms !== 'number') return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

function duration(secs) {
  if (typeof secs !== 'number') return '—';
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  return [d && `${d}d`, (d || h) && `${h}h`, (d || h || m) && `${m}m`, `${s}s`]
    .filter(Boolean)
    .join(' ');
}

function notAvailable(container, what, error) {
  container.replaceChildren(
    el('p', { class: 'unavailable' }, `${what} not available in this berth (${error.message}).`),
  );
}

// A table of the keys of a list of objects (for answers whose shape this page does not fix):
// the keys named in `first` first, then any others.
function genericTable(rows, caption, first = []) {
  if (rows.length === 0) return el('p', {}, `No ${caption.toLowerCase()}.`);
  const present = new Set(rows.flatMap((row) => Object.keys(row)));
  const keys = [...first.filter((k) => present.has(k)), ...[...present].filter((k) => !first.includes(k))];
  const cell = (value) => (value !== null && typeof value === 'object' ? JSON.stringify(value) : value);
  return el(
    'div',
    { class: 'scroll' },
    el(
      'table',
      {},
      el('caption', {}, caption),
      el('thead', {}, el('tr', {}, ...keys.map((k) => el('th', { scope: 'col' }, k)))),
      el('tbody', {}, ...rows.map((row) => el('tr', {}, ...keys.map((k) => el('td', {}, cell(row[k] ?? '')))))),
    ),
  );
}

const listOf = (answer) => (Array.isArray(answer) ? answer : (answer && answer.data) || []);

// ---- sections --------------------------------------------------------------------------

function show() {
  const hash = decodeURIComponent(location.hash.slice(1));
  let section = 'overview';
  if (hash.startsWith('session/')) section = 'session';
  else if (['sessions', 'settings'].includes(hash)) section = hash;
  for (const node of document.querySelectorAll('main > section')) node.hidden = node.id !== section;
  for (const link of document.querySelectorAll('header nav a')) {
    const current = link.getAttribute('href') === `#${section === 'session' ? 'sessions' : section}`;
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  clearTimeout(state.pollTimer);
  if (section === 'overview') pollStats();
  if (section === 'sessions') loadSessions();
  if (section === 'session') loadDetail(hash.slice('session/'.length));
  if (section === 'settings') loadSettings();
}

// ---- overview --------------------------------------------------------------------------

async function pollStats() {
  try {
    const stats = await api('GET', '/api/v1/stats');
    renderStats(stats, Date.now());
  } catch (error) {
    say(error.message, true);
  }
  if (!document.getElementById('overview').hidden) state.pollTimer = setTimeout(pollStats, POLL_MS);
}

function renderStats(stats, at) {
  const total = stats.total || {};
  const before = state.stats;
  state.stats = { at, total };
  const rate = (key) => {
    if (!before || at <= before.at) return '—';
    const delta = (total[key] ?? 0) - (before.total[key] ?? 0);
    if (delta < 0) return '—'; // the broker restarted between the two readings
    return `${(delta / ((at - before.at) / 1000)).toFixed(1)} /s`;
  };
  const figures = [
    ['Connections', number(total['clients/connected'])],
    ['Sessions online', number(total['clients/connected'])],
    ['Sessions offline', number(total['clients/disconnected'])],
    ['Messages in', rate('messages/received'), 'rate-in'],
    ['Messages out', rate('messages/sent'), 'rate-out'],
    ['PUBLISH in', rate('publish/messages/received')],
    ['PUBLISH dropped', rate('publish/messages/dropped')],
    ['Queued messages', number(total['store/queued'])],
    ['Messages in the store', number(total['store/messages'])],
    ['Disk (log bytes)', bytes(total['store/bytes'])],
    ['Subscriptions', number(total['subscriptions/count'])],
    ['Retained messages', number(total['retained messages/count'])],
    ['Uptime', duration(stats.uptime_secs)],
  ];
  document.getElementById('figures').replaceChildren(
    ...figures.map(([name, value, id]) => el('div', {}, el('dt', {}, name), el('dd', { id }, value))),
  );
  const cores = stats.cores || [];
  document.querySelector('#core-table tbody').replaceChildren(
    ...cores.map((core, index) =>
      el(
        'tr',
        {},
        el('th', { scope: 'row' }, index),
        el('td', {}, number(core['clients/connected'])),
        el('td', {}, number(core['clients/disconnected'])),
        el('td', {}, number(core['store/queued'])),
        el('td', {}, number(core['subscriptions/count'])),
        el('td', {}, bytes(core['store/bytes'])),
      ),
    ),
  );
}

// ---- sessions --------------------------------------------------------------------------

function readFilters() {
  const form = document.getElementById('filters');
  const data = Object.fromEntries(new FormData(form).entries());
  for (const key of Object.keys(data)) data[key] = data[key].trim();
  return data;
}

async function loadSessions() {
  const params = { ...state.filters, cursor: state.cursor };
  const body = document.querySelector('#session-table tbody');
  try {
    const answer = await api('GET', `/api/v1/clients${query(params)}`);
    state.nextCursor = answer.meta.cursor;
    body.replaceChildren(...answer.data.map(sessionRow));
    const first = state.before.length * Number(state.filters.limit || 100) + 1;
    const last = first + answer.data.length - 1;
    document.getElementById('page-info').textContent =
      answer.data.length === 0 ? 'No sessions' : `Sessions ${first}–${last}, page ${state.before.length + 1}`;
    document.getElementById('session-caption').textContent =
      answer.data.length === 0 ? 'No sessions match the filters' : 'Sessions matching the filters';
    if (answer.data.length === 0) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 13, class: 'empty' }, 'No sessions match.')));
    }
  } catch (error) {
    state.nextCursor = null;
    body.replaceChildren();
    say(error.message, true);
  }
  document.getElementById('prev').disabled = state.before.length === 0;
  document.getElementById('next').disabled = !state.nextCursor;
}

function sessionRow(s) {
  const id = s.clientid;
  const queue = `${number(s.mqueue_len)} / ${number(s.mqueue_max)}`;
  return el(
    'tr',
    { 'data-clientid': id },
    el('th', { scope: 'row' }, el('a', { href: `#session/${encodeURIComponent(id)}` }, id)),
    el('td', {}, s.username ?? ''),
    el('td', { class: s.connected ? 'online' : 'offline' }, s.connected ? 'connected' : 'disconnected'),
    el('td', {}, s.protocol ?? ''),
    el('td', {}, s.peer ?? ''),
    el('td', { class: 'num', 'data-field': 'mqueue_len' }, queue),
    el('td', { class: 'num' }, number(s.mqueue_dropped)),
    el('td', { class: 'num' }, number(s.inflight_cnt)),
    el('td', { class: 'num' }, number(s.subscriptions_cnt)),
    el('td', { class: 'time' }, s.connected ? '' : time(s.disconnected_at)),
    el('td', { class: 'time' }, s.connected ? '' : time(s.expires_at)),
    el('td', { class: 'num' }, s.owner_core),
    el(
      'td',
      {},
      el(
        'div',
        { class: 'row-actions' },
        s.connected
          ? el('button', { type: 'button', 'aria-label': `Kick ${id}`, onclick: () => kick(id) }, 'Kick')
          : null,
        el(
          'button',
          { type: 'button', class: 'danger', 'aria-label': `Clear session ${id}`, onclick: () => clear(id) },
          'Clear',
        ),
      ),
    ),
  );
}

async function kick(id) {
  if (!confirm(`Disconnect client "${id}"? Its session and queue are kept.`)) return;
  try {
    await api('POST', `${clientPath(id)}/kick`);
    say(`Kicked ${id}.`);
  } catch (error) {
    say(error.message, true);
  }
  refreshCurrent();
}

async function clear(id) {
  const question =
    `Clear the session of "${id}"? Its subscriptions and queued messages are discarded, ` +
    'and the client is disconnected if it is connected.';
  if (!confirm(question)) return;
  try {
    await api('DELETE', clientPath(id));
    say(`Cleared the session of ${id}.`);
  } catch (error) {
    say(error.message, true);
  }
  // From its own page, back to the list (the page of a cleared session would be empty).
  if (!document.getElementById('session').hidden) location.hash = '#sessions';
  else refreshCurrent();
}

async function bulkClear() {
  const f = state.filters;
  const params = {
    conn_state: 'disconnected',
    like_clientid: f.like_clientid,
    username: f.username,
    min_queue_len: f.min_queue_len,
  };
  const terms = [
    f.like_clientid && `client id contains "${f.like_clientid}"`,
    f.username && `username is "${f.username}"`,
    f.min_queue_len && `queue length at least ${f.min_queue_len}`,
  ].filter(Boolean);
  const which = terms.length ? `whose ${terms.join(', ')}` : 'of every client (no filter is set)';
  if (!confirm(`Clear ALL disconnected sessions ${which}? This cannot be undone.`)) return;
  try {
    const answer = await api('DELETE', `/api/v1/clients${query(params)}`);
    say(`Cleared ${number(answer.deleted)} disconnected sessions.`);
  } catch (error) {
    say(error.message, true);
  }
  firstPage();
}

function firstPage() {
  state.filters = readFilters();
  state.cursor = null;
  state.before = [];
  loadSessions();
}

function refreshCurrent() {
  if (!document.getElementById('session').hidden && state.detailId !== null) loadDetail(state.detailId);
  else loadSessions();
}

// ---- one session -----------------------------------------------------------------------

const DETAIL_FIELDS = [
  ['clientid', 'Client id'],
  ['username', 'Username'],
  ['connected', 'Connected', (v) => (v ? 'yes' : 'no')],
  ['persistent', 'Persistent', (v) => (v ? 'yes' : 'no')],
  ['protocol', 'Protocol'],
  ['peer', 'Peer'],
  ['connected_at', 'Connected at', time],
  ['disconnected_at', 'Disconnected at', time],
  ['session_expiry_interval', 'Session expiry', (v) => (typeof v === 'number' ? duration(v) : 'never')],
  ['expires_at', 'Expires at', time],
  ['mqueue_len', 'Queue length', number],
  ['mqueue_max', 'Queue maximum', number],
  ['mqueue_dropped', 'Dropped from the queue', number],
  ['inflight_cnt', 'In flight', number],
  ['subscriptions_cnt', 'Subscriptions', number],
  ['owner_core', 'Owner core'],
];

async function loadDetail(id) {
  state.detailId = id;
  document.getElementById('detail-id').textContent = id;
  const fields = document.getElementById('detail-fields');
  let session;
  try {
    session = await api('GET', clientPath(id));
  } catch (error) {
    fields.replaceChildren(el('p', { class: 'error' }, error.message));
    document.getElementById('detail-subscriptions').replaceChildren();
    document.getElementById('detail-queue').replaceChildren();
    return;
  }
  const known = new Set(DETAIL_FIELDS.map(([key]) => key));
  const rows = DETAIL_FIELDS.map(([key, name, format]) => [name, format ? format(session[key]) : session[key]]);
  for (const [key, value] of Object.entries(session)) {
    if (!known.has(key)) rows.push([key, typeof value === 'object' ? JSON.stringify(value) : value]);
  }
  fields.replaceChildren(
    ...rows.map(([name, value]) => el('div', {}, el('dt', {}, name), el('dd', {}, value ?? '—'))),
  );
  document.getElementById('detail-kick').disabled = !session.connected;
  loadSubscriptions(id);
  loadQueue(id, null);
}

const SUBSCRIPTION_COLUMNS = ['topic', 'qos', 'nl', 'rap', 'rh', 'identifier'];
const QUEUE_COLUMNS = ['seq', 'state', 'topic', 'qos', 'retain', 'payload', 'payload_size', 'publisher'];

async function loadSubscriptions(id) {
  const box = document.getElementById('detail-subscriptions');
  try {
    const answer = await api('GET', `${clientPath(id)}/subscriptions`);
    box.replaceChildren(genericTable(listOf(answer), 'Subscriptions', SUBSCRIPTION_COLUMNS));
  } catch (error) {
    if (error.noRoute) notAvailable(box, 'Subscriptions are', error);
    else box.replaceChildren(el('p', { class: 'error' }, error.message));
  }
}

async function loadQueue(id, cursor) {
  const box = document.getElementById('detail-queue');
  try {
    const answer = await api('GET', `${clientPath(id)}/queue${query({ limit: 50, cursor })}`);
    const next = answer && answer.meta && answer.meta.cursor;
    const table = genericTable(listOf(answer), 'Queued messages', QUEUE_COLUMNS);
    if (next) {
      const more = el('button', { type: 'button', onclick: () => loadQueue(id, next) }, 'Next 50 queued messages');
      box.replaceChildren(table, more);
    } else {
      box.replaceChildren(table);
    }
  } catch (error) {
    if (error.noRoute) notAvailable(box, 'The queue is', error);
    else box.replaceChildren(el('p', { class: 'error' }, error.message));
  }
}

// ---- settings --------------------------------------------------------------------------

async function loadSettings() {
  const form = document.getElementById('settings-form');
  let settings;
  try {
    settings = await api('GET', '/api/v1/settings');
  } catch (error) {
    if (error.noRoute) notAvailable(form, 'Settings are', error);
    else form.replaceChildren(el('p', { class: 'error' }, error.message));
    return;
  }
  const values = settings && settings.data && typeof settings.data === 'object' ? settings.data : settings;
  const inputs = Object.entries(values).map(([key, value]) => settingInput(key, value));
  form.replaceChildren(...inputs, el('p', {}, el('button', { type: 'submit' }, 'Save settings')));
  form.onsubmit = (event) => {
    event.preventDefault();
    saveSettings(form, values);
  };
}

function settingInput(key, value) {
  const id = `setting-${key}`;
  let input;
  if (typeof value === 'boolean') {
    input = el('input', { id, name: key, type: 'checkbox', checked: value, 'data-kind': 'boolean' });
  } else if (typeof value === 'number') {
    input = el('input', { id, name: key, type: 'number', value, step: 'any', 'data-kind': 'number' });
  } else if (value !== null && typeof value === 'object') {
    input = el('textarea', { id, name: key, rows: 3, 'data-kind': 'json' }, JSON.stringify(value, null, 1));
  } else {
    input = el('input', { id, name: key, value: value ?? '', 'data-kind': value === null ? 'nullable' : 'string' });
  }
  return el('p', { class: 'setting' }, el('label', { for: id }, key), input);
}

async function saveSettings(form, old) {
  const changed = {};
  try {
    for (const input of form.querySelectorAll('[data-kind]')) {
      const kind = input.dataset.kind;
      let value = input.value;
      if (kind === 'boolean') value = input.checked;
      else if (kind === 'number') value = input.value === '' ? null : Number(input.value);
      else if (kind === 'json') value = JSON.parse(input.value);
      else if (kind === 'nullable' && value === '') value = null;
      if (JSON.stringify(value) !== JSON.stringify(old[input.name])) changed[input.name] = value;
    }
  } catch (error) {
    say(`Settings not saved: ${error.message}`, true);
    return;
  }
  if (Object.keys(changed).length === 0) {
    say('No setting changed.');
    return;
  }
  try {
    await api('PUT', '/api/v1/settings', changed);
    say(`Saved: ${Object.keys(changed).join(', ')}.`);
    loadSettings();
  } catch (error) {
    say(`Settings not saved: ${error.message}`, true);
  }
}

// ---- wiring ----------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('poll-secs').textContent = String(POLL_MS / 1000);
  document.getElementById('filters').addEventListener('submit', (event) => {
    event.preventDefault();
    firstPage();
  });
  document.getElementById('refresh').addEventListener('click', loadSessions);
  document.getElementById('bulk-clear').addEventListener('click', bulkClear);
  document.getElementById('next').addEventListener('click', () => {
    if (!state.nextCursor) return;
    state.before.push(state.cursor);
    state.cursor = state.nextCursor;
    loadSessions();
  });
  document.getElementById('prev').addEventListener('click', () => {
    if (state.before.length === 0) return;
    state.cursor = state.before.pop();
    loadSessions();
  });
  document.getElementById('detail-kick').addEventListener('click', () => kick(state.detailId));
  document.getElementById('detail-clear').addEventListener('click', () => clear(state.detailId));
  document.getElementById('detail-refresh').addEventListener('click', () => loadDetail(state.detailId));
  state.filters = readFilters();
  window.addEventListener('hashchange', show);
  show();
});
