// van-console web front-end: a small single-page app over the REST API in
// docs/console-api.md. No build step: plain ES2020, hand-written SVG.

// ---------- DOM helpers ----------
const $ = (sel, root = document) => root.querySelector(sel);
const NS = 'http://www.w3.org/2000/svg';
function mk(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' || k === 'checked') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of kids.flat(Infinity)) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const h = (t, a, ...k) => mk(document.createElement(t), a, k);
const s = (t, a, ...k) => mk(document.createElementNS(NS, t), a, k);
const enc = encodeURIComponent;

// Focus survives a re-render when the new content has an element with the same key.
const keyOf = el => (el.closest('[data-key]')?.dataset.key || '') + '|' +
  (el.dataset.fk || el.getAttribute('href') || el.id || el.textContent.trim());
function swap(region, ...kids) {
  const act = document.activeElement;
  const key = act && act !== document.body && region.contains(act) ? keyOf(act) : null;
  region.replaceChildren(...kids.flat().filter(k => k != null && k !== false));
  if (key) for (const el of region.querySelectorAll('a,button,input,select,[tabindex]'))
    if (keyOf(el) === key) { el.focus({ preventScroll: true }); break; }
}

// ---------- formatting ----------
const nf = new Intl.NumberFormat('en-US');
const num = n => (n == null || Number.isNaN(n) ? '–' : nf.format(n));
function bytes(n) {
  if (n == null || Number.isNaN(n)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n) : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
}
const rateB = n => (n == null ? '–' : bytes(n) + '/s');
function dec(n) {
  if (n == null || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  return a === 0 ? '0' : a < 0.1 ? n.toFixed(3) : a < 10 ? n.toFixed(2) : a < 100 ? n.toFixed(1) : nf.format(Math.round(n));
}
const perSec = n => (n == null ? '–' : dec(n) + '/s');
function dur(ms) {
  if (ms == null || Number.isNaN(ms)) return '–';
  if (ms === 0) return '0 ms';
  if (ms < 10) return ms.toFixed(ms < 1 ? 2 : 1) + ' ms';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60e3) return (ms / 1000).toFixed(ms < 10e3 ? 2 : 1) + ' s';
  const sec = Math.floor(ms / 1000), d = Math.floor(sec / 86400), hr = Math.floor(sec / 3600) % 24,
    m = Math.floor(sec / 60) % 60;
  return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : `${m}m ${sec % 60}s`;
}
const now = () => Date.now() + st.skew;
function ago(t) {
  if (!t) return '–';
  const d = Math.max(0, (now() - t) / 1000);
  const txt = d < 5 ? 'just now' : d < 60 ? `${Math.floor(d)} s ago` : d < 3600 ? `${Math.floor(d / 60)} min ago`
    : d < 86400 ? `${Math.floor(d / 3600)} h ago` : `${Math.floor(d / 86400)} d ago`;
  const at = new Date(t);
  return h('time', { datetime: at.toISOString(), title: at.toLocaleString() }, txt);
}
const hhmm = (t, sec) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: sec ? '2-digit' : undefined, hour12: false });
const plural = (n, w) => `${num(n)} ${w}${n === 1 ? '' : 's'}`;

// ---------- state and API ----------
const st = {
  user: null, view: null, viewKey: '', ctx: null, gen: 0, busy: false, again: false,
  es: null, paused: false, skew: 0, lastUpdate: 0, sites: new Map(), hover: {}, retry: null,
};
class HttpError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}
async function api(path, opt = {}) {
  let r;
  try {
    r = await fetch(path, {
      credentials: 'same-origin', method: opt.method || 'GET', body: opt.body,
      headers: { Accept: 'application/json', ...(opt.body ? { 'Content-Type': 'application/json' } : {}) },
    });
  } catch {
    throw new HttpError(0, 'cannot reach the console server');
  }
  if (r.status === 401 && !opt.raw) { needLogin(true); throw new HttpError(401, 'not logged in'); }
  if (!r.ok) {
    let m = `${r.status} ${r.statusText}`;
    try { m = (await r.json()).error || m; } catch { /* not JSON */ }
    throw new HttpError(r.status, m);
  }
  return r.status === 204 ? null : r.json();
}
function url(path, params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v != null && v !== '') u.set(k, v);
  const q = u.toString();
  return q ? `${path}?${q}` : path;
}
const cache = new Map();
async function cached(u, ttl = 10e3) {
  const c = cache.get(u);
  if (c && Date.now() - c.t < ttl) return c.v;
  const v = await api(u);
  cache.set(u, { t: Date.now(), v });
  return v;
}
async function loadSites(fresh) {
  const r = fresh ? await api('/api/v1/sites?limit=10000') : await cached('/api/v1/sites?limit=10000', 5e3);
  if (fresh) cache.set('/api/v1/sites?limit=10000', { t: Date.now(), v: r });
  st.sites = new Map(r.items.map(x => [x.id, x]));
  return r.items;
}
const serviceList = () => cached('/api/v1/services?limit=10000&sortBy=address.asc').then(r => r.items);

// ---------- small widgets ----------
const siteName = id => st.sites.get(id)?.name || id;
const siteLink = id => (id ? h('a', { href: `/sites/${enc(id)}` }, siteName(id)) : '–');
const svcLink = a => (a ? h('a', { href: `/services/${enc(a)}` }, a) : '–');
const mono = (t, title) => (t ? h('span', { class: 'mono', title }, t) : '–');
const badge = (text, cls) => h('span', { class: `badge ${cls || text}` }, text);
const list = (items, f) => (items && items.length ? items.map((x, i) => [i ? ', ' : '', f(x)]) : '–');
const uniq = a => [...new Set(a)];
const isHttp = p => /^http/.test(p || '');
function outcome(x) {
  if (!x.outcome) return x.state === 'active' ? '–' : '';
  if (x.outcome === 'closed' && !x.error) return 'closed';
  return h('span', { class: 'outcome', title: x.error || x.outcome },
    badge(x.outcome, 'bad'), x.error ? h('span', { class: 'errtext' }, x.error) : null);
}
function statusCell(r) {
  const c = r.statusClass || (r.status ? `${String(r.status)[0]}xx` : 'error');
  return h('span', { class: `status s${c}`, title: r.error || null }, r.status ? String(r.status) : 'none');
}
function stat(label, value) {
  return h('div', { class: 'stat' }, h('span', { class: 'stat-v' }, value), h('span', { class: 'stat-l' }, label));
}
function empty(msg) { return h('p', { class: 'muted empty' }, msg); }
function problem(e) {
  return h('div', { class: 'alert' }, e.status === 404 ? 'Not found: ' : 'Could not load: ', e.message);
}

// Table. cols: {label, sort (field), num, cell(item), cls}.
function table(caption, cols, items, o = {}) {
  const [sf, sd] = (o.sortBy || '').split('.');
  const head = cols.map(c => {
    const sorted = c.sort && c.sort === sf;
    const ariaSort = sorted ? (sd === 'asc' ? 'ascending' : 'descending') : c.sort && o.onSort ? 'none' : null;
    const label = c.sort && o.onSort
      ? h('button', {
        type: 'button', class: 'sort', 'data-fk': 'sort:' + c.sort,
        onclick: () => o.onSort(`${c.sort}.${sorted ? (sd === 'asc' ? 'desc' : 'asc') : c.num || c.desc ? 'desc' : 'asc'}`),
      }, c.label, h('span', { class: 'arrow', 'aria-hidden': 'true' }, sorted ? (sd === 'asc' ? '▲' : '▼') : '↕'))
      : c.label;
    return h('th', { scope: 'col', class: c.num ? 'num' : null, 'aria-sort': ariaSort }, label);
  });
  const rows = items.length ? items.map(it => h('tr', { 'data-key': o.key ? o.key(it) : it.id },
    cols.map((c, i) => h(i === 0 && o.rowHeader ? 'th' : 'td',
      { class: [c.num && 'num', c.cls].filter(Boolean).join(' ') || null, scope: i === 0 && o.rowHeader ? 'row' : null },
      c.cell(it)))))
    : [h('tr', {}, h('td', { colspan: cols.length, class: 'muted empty' }, o.empty || 'Nothing to show.'))];
  return h('div', { class: 'tw', role: 'region', 'aria-label': caption, tabindex: '0' },
    h('table', {}, h('caption', { class: 'sr-only' }, caption), h('thead', {}, h('tr', {}, head)), h('tbody', {}, rows)));
}

function pager(c, r, limit) {
  const off = +c.query.get('offset') || 0;
  const link = (o, label, ok) => {
    if (!ok) return h('span', { class: 'btn disabled', 'aria-disabled': 'true' }, label);
    const q = new URLSearchParams(c.query);
    if (o > 0) q.set('offset', o); else q.delete('offset');
    const qs = q.toString();
    return h('a', { class: 'btn', href: location.pathname + (qs ? '?' + qs : ''), 'data-fk': label }, label);
  };
  const from = r.count ? off + 1 : 0, more = off > 0 || off + r.count < r.total;
  return h('div', { class: 'pager' },
    h('span', { class: 'muted' }, `${num(from)}–${num(off + r.count)} of ${num(r.total)}`),
    more && link(Math.max(0, off - limit), '‹ Previous', off > 0),
    more && link(off + limit, 'Next ›', off + r.count < r.total));
}

// Filter form: defs {name, label, type: 'search'|'select', options: [[v, label]] | () => Promise}.
function filters(defs) {
  const ctl = {};
  let timer = null;
  const form = h('form', { class: 'filters', role: 'search', onsubmit: e => e.preventDefault() },
    defs.map(d => {
      const id = 'f-' + d.name;
      const input = d.type === 'search'
        ? h('input', {
          id, type: 'search', name: d.name, placeholder: d.placeholder || '', autocomplete: 'off',
          oninput: e => { clearTimeout(timer); timer = setTimeout(() => setQuery({ [d.name]: e.target.value }, true), 300); },
        })
        : h('select', { id, name: d.name, onchange: e => setQuery(d.set ? d.set(e.target.value) : { [d.name]: e.target.value }) },
          (Array.isArray(d.options) ? d.options : [['', d.all || 'All']]).map(([v, l]) => h('option', { value: v }, l)));
      ctl[d.name] = { el: input, d };
      return h('div', { class: 'field' }, h('label', { for: id }, d.label), input);
    }),
    h('div', { class: 'field end' }, h('a', { class: 'btn', href: location.pathname }, 'Clear filters')));
  return {
    form,
    sync(c) {
      for (const { el } of Object.values(ctl)) {
        if (el === document.activeElement) continue;
        const v = c.query.get(el.name) || '';
        if (el.tagName === 'SELECT' && v && ![...el.options].some(o => o.value === v)) el.append(h('option', { value: v }, v));
        el.value = v;
      }
    },
    async fill() {
      for (const { el, d } of Object.values(ctl)) {
        if (typeof d.options !== 'function' || el === document.activeElement) continue;
        const opts = [['', d.all || 'All'], ...await d.options()];
        const v = el.value;
        if (v && !opts.some(o => o[0] === v)) opts.push([v, v]);
        const sig = JSON.stringify(opts);
        if (el.dataset.sig === sig) continue;
        el.dataset.sig = sig;
        el.replaceChildren(...opts.map(([ov, l]) => h('option', { value: ov }, l)));
        el.value = v;
      }
    },
  };
}
const svcOpts = () => serviceList().then(l => l.map(x => [x.address, x.address]));
const siteOpts = () => loadSites().then(l => l.map(x => [x.id, x.name || x.id]));

function page(title, ...kids) {
  return [h('h1', { tabindex: '-1' }, title), ...kids];
}
const region = (cls) => h('div', { class: cls || null });

// ---------- router ----------
const ROUTES = [
  [/^\/(?:topology)?\/?$/, 'topology'], [/^\/services\/?$/, 'services'], [/^\/services\/(.+)$/, 'service'],
  [/^\/sites\/?$/, 'sites'], [/^\/sites\/(.+)$/, 'site'], [/^\/connections\/?$/, 'connections'],
  [/^\/requests\/?$/, 'requests'],
];
function match(path) {
  for (const [re, name] of ROUTES) {
    const m = re.exec(path);
    if (m) {
      try { return { name, arg: m[1] != null ? decodeURIComponent(m[1]) : null }; } catch { break; }
    }
  }
  return { name: 'notfound', arg: null };
}
function setQuery(changes, replace) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) if (v == null || v === '') q.delete(k); else q.set(k, v);
  if (!('offset' in changes)) q.delete('offset');
  const qs = q.toString();
  history[replace ? 'replaceState' : 'pushState'](null, '', location.pathname + (qs ? '?' + qs : ''));
  route();
}
function route() {
  if (!st.user) return;
  if (location.pathname === '/') history.replaceState(null, '', '/topology' + location.search);
  const m = match(location.pathname);
  const c = { ...m, query: new URLSearchParams(location.search) };
  const key = `${m.name}\0${m.arg}`;
  const section = { service: 'services', site: 'sites' }[m.name] || m.name;
  for (const a of document.querySelectorAll('[data-nav]'))
    if (a.dataset.nav === section) a.setAttribute('aria-current', section === m.name ? 'page' : 'true');
    else a.removeAttribute('aria-current');
  st.ctx = c;
  if (key !== st.viewKey) {
    const first = !st.viewKey;
    st.viewKey = key;
    st.gen++;
    st.hover = {};
    const main = $('#main');
    main.replaceChildren();
    st.view = VIEWS[m.name](c, main);
    document.title = `${st.view.title} · VAN console`;
    if (!first) { window.scrollTo(0, 0); $('h1', main)?.focus({ preventScroll: true }); }
  }
  st.view.sync?.(c);
  refresh();
}
async function refresh() {
  if (!st.user || !st.view) return;
  if (st.busy) { st.again = true; return; }
  st.busy = true;
  const gen = st.gen;
  try {
    await st.view.refresh(st.ctx);
    if (gen === st.gen) netError(null);
  } catch (e) {
    if (e.status !== 401 && gen === st.gen) netError(e);
  } finally {
    st.busy = false;
    if (st.again) { st.again = false; refresh(); }
  }
}
function netError(e) {
  const b = $('#neterr');
  if (!e) { b.hidden = true; return; }
  const txt = (e.status ? `The console server answered ${e.status}: ${e.message}.` : `Network error: ${e.message}.`) +
    (e.status && e.status < 500 ? '' : ' Retrying on the next update.');
  if (b.textContent !== txt) b.textContent = txt;
  b.hidden = false;
}

document.addEventListener('click', e => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a');
  const href = a?.getAttribute('href');
  if (!href || href.startsWith('#') || a.hasAttribute('target') || a.hasAttribute('download')) return;
  const u = new URL(href, location.href);
  if (u.origin !== location.origin || /^\/(api|assets|metrics)(\/|$)/.test(u.pathname)) return;
  e.preventDefault();
  if (u.pathname + u.search !== location.pathname + location.search) history.pushState(null, '', u.pathname + u.search);
  route();
});
window.addEventListener('popstate', route);

// ---------- live updates ----------
function announce(t) { const a = $('#announce'); if (a.textContent !== t) a.textContent = t; }
function setLive(state, t) {
  const el = $('#live');
  el.dataset.state = st.paused ? 'paused' : state;
  $('#live-text').textContent = st.paused ? 'Paused' : state === 'ok'
    ? `Live · updated ${hhmm(t || now(), true)}` : 'Reconnecting…';
  announce(st.paused ? 'Live updates paused' : state === 'ok' ? 'Live updates on' : 'Live updates lost, reconnecting');
}
function summary(d) {
  const n = v => (Array.isArray(v) ? v.length : v);
  const parts = [[d.sites, 'site'], [d.routers, 'router'], [d.links, 'link'], [d.services, 'service'],
    [d.openConnections, 'open connection'], [d.connectionsTotal, 'connection'], [d.requestsTotal, 'request']]
    .filter(([v]) => v != null).map(([v, w]) => plural(n(v), w));
  const el = $('#summary');
  el.textContent = parts.join(' · ');
  el.hidden = !parts.length;
}
function startLive() {
  stopLive();
  const es = new EventSource('/api/v1/events');
  st.es = es;
  es.addEventListener('update', ev => {
    let d = {};
    try { d = JSON.parse(ev.data); } catch { /* keep {} */ }
    st.lastUpdate = Date.now();
    if (d.time) st.skew = d.time - Date.now();
    summary(d);
    setLive('ok', d.time);
    if (!st.paused) refresh();
  });
  es.addEventListener('error', () => {
    if (st.es !== es) return;
    setLive('down');
    if (!st.paused) refresh(); // shows the error banner, or the login form on 401
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      st.es = null;
      // Closed for good (e.g. 401): check the session, then try again.
      clearTimeout(st.retry);
      st.retry = setTimeout(() => api('/api/v1/user').then(() => st.user && startLive(), () => st.user && startLive()), 5000);
    }
  });
}
function stopLive() {
  clearTimeout(st.retry);
  if (st.es) { st.es.close(); st.es = null; }
}
// A page kept in the back/forward cache must not hold its event stream open.
window.addEventListener('pagehide', stopLive);
window.addEventListener('pageshow', e => { if (e.persisted && st.user) { startLive(); refresh(); } });
// Without events (proxy buffering, server trouble) poll every 3 s so errors and 401 surface.
setInterval(() => { if (st.user && !st.paused && Date.now() - st.lastUpdate > 3000) refresh(); }, 3000);

// ---------- login ----------
function showApp(on) {
  $('#top').hidden = !on;
  $('#main').hidden = !on;
  $('#login').hidden = on;
  if (!on) for (const id of ['#unsecured', '#neterr', '#summary']) $(id).hidden = true;
}
function needLogin(expired) {
  const was = !!st.user;
  if (!was && !$('#login').hidden) return; // already asking
  stopLive();
  st.user = null;
  st.viewKey = '';
  st.view = null;
  cache.clear();
  showApp(false);
  $('#login-note').textContent = expired && was ? 'Your session ended. Log in again.' : 'Log in to see the network.';
  $('#login-user').focus();
}
$('#login-form').addEventListener('submit', async e => {
  e.preventDefault();
  const user = $('#login-user'), pass = $('#login-pass'), err = $('#login-err'), btn = $('#login-form button');
  err.textContent = '';
  if (!user.value || !pass.value) { err.textContent = 'Enter a username and a password.'; return; }
  btn.disabled = true;
  try {
    await api('/api/v1/login', { method: 'POST', raw: true, body: JSON.stringify({ username: user.value, password: pass.value }) });
    pass.value = '';
    await start();
  } catch (x) {
    err.textContent = x.status === 401 ? 'Wrong username or password.'
      : x.status === 429 ? 'Too many attempts: wait a minute, then try again.'
        : `Login failed: ${x.message}.`;
    pass.select();
  } finally {
    btn.disabled = false;
  }
});
$('#logout').addEventListener('click', async () => {
  try { await api('/api/v1/logout', { method: 'POST', raw: true }); } catch { /* the session ends here anyway */ }
  needLogin(false);
});
$('#pause').addEventListener('click', e => {
  st.paused = !st.paused;
  e.currentTarget.setAttribute('aria-pressed', st.paused);
  e.currentTarget.textContent = st.paused ? 'Resume' : 'Pause';
  setLive(st.es ? 'ok' : 'down');
  if (!st.paused) refresh();
});

async function start() {
  let u;
  try {
    u = await api('/api/v1/user', { raw: true });
  } catch (e) {
    if (e.status === 401) { needLogin(false); return; }
    $('#main').replaceChildren(h('div', { class: 'alert' }, `Cannot load the console: ${e.message}. Retrying…`));
    setTimeout(start, 5000);
    return;
  }
  st.user = u;
  showApp(true);
  $('#user').textContent = `${u.username || 'anonymous'} · ${u.authMode || 'internal'}`;
  $('#unsecured').hidden = u.authMode !== 'unsecured';
  $('#logout').hidden = u.authMode === 'unsecured';
  st.viewKey = '';
  route();
  startLive();
}

// ---------- charts ----------
const WINDOWS = { '5m': [300, 10], '15m': [900, 10], '1h': [3600, 30], '6h': [21600, 180], '1d': [86400, 600] };
const WIN_TEXT = { '5m': '5 minutes', '15m': '15 minutes', '1h': 'hour', '6h': '6 hours', '1d': 'day' };
function niceStep(v) {
  if (!(v > 0)) return 0.25;
  const p = 10 ** Math.floor(Math.log10(v)), f = v / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}
function byteStep(v) {
  if (!(v > 0)) return 256;
  const p = 1024 ** Math.max(0, Math.floor(Math.log(v) / Math.log(1024)));
  return niceStep(v / p) * p;
}
// o: {id, title, axis, fmt, series: [{name, key, color}], points, win}
function chart(o) {
  const W = 560, H = 200, L = 84, R = 14, T = 10, B = 30;
  const pts = o.points || [];
  const t0 = pts[0]?.time ?? now() - 1, t1 = pts[pts.length - 1]?.time ?? now();
  let max = 0;
  for (const p of pts) for (const se of o.series) if (p[se.key] > max) max = p[se.key];
  const step = (o.bytes ? byteStep : niceStep)(max / 4), n = max > 0 ? Math.max(1, Math.ceil(max / step - 1e-9)) : 4;
  const top = n * step;
  const x = t => L + ((t - t0) / (t1 - t0 || 1)) * (W - L - R);
  const y = v => T + (1 - v / top) * (H - T - B);
  const g = [];
  for (let i = 0; i <= n; i++) {
    const v = step * i, yy = y(v);
    g.push(s('line', { class: 'grid', x1: L, x2: W - R, y1: yy, y2: yy }),
      s('text', { class: 'tick', x: L - 6, y: yy + 4, 'text-anchor': 'end' }, o.fmt(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    g.push(s('text', { class: 'tick', x: x(t), y: H - B + 16, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' },
      hhmm(t, o.win <= 900)));
  }
  g.push(s('text', { class: 'axis', transform: `translate(11 ${(H - B) / 2}) rotate(-90)`, 'text-anchor': 'middle' }, o.axis),
    s('line', { class: 'base', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const lines = o.series.map(se => {
    let d = '', pen = false;
    for (const p of pts) {
      const v = p[se.key];
      if (v == null || Number.isNaN(v)) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${x(p.time).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    return s('path', { class: 'series', d, style: `stroke:${se.color}` });
  });
  const cross = s('line', { class: 'cross', x1: 0, x2: 0, y1: T, y2: H - B, visibility: 'hidden' });
  const last = pts[pts.length - 1];
  const vals = o.series.map(() => h('span', { class: 'lv' }));
  const when = h('span', { class: 'muted' });
  const show = i => {
    const p = pts[i];
    o.series.forEach((se, k) => { vals[k].textContent = p ? o.fmt(p[se.key]) : '–'; });
    when.textContent = p ? (i === pts.length - 1 ? 'latest' : 'at ' + hhmm(p.time, true)) : 'no data';
    if (p && i !== pts.length - 1) { cross.setAttribute('x1', x(p.time)); cross.setAttribute('x2', x(p.time)); cross.setAttribute('visibility', 'visible'); }
    else cross.setAttribute('visibility', 'hidden');
  };
  const nearest = t => {
    let bi = pts.length - 1, bd = Infinity;
    pts.forEach((p, i) => { const dd = Math.abs(p.time - t); if (dd < bd) { bd = dd; bi = i; } });
    return bi;
  };
  const label = `${o.title}, last ${o.winLabel}. ` + (last
    ? 'Latest: ' + o.series.map(se => `${se.name} ${o.fmt(last[se.key])}`).join(', ') + '.'
    : 'No data.');
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label,
    onpointermove: e => {
      if (!pts.length) return;
      const r = svg.getBoundingClientRect();
      const px = ((e.clientX - r.left) / r.width) * W;
      const t = t0 + ((px - L) / (W - L - R)) * (t1 - t0);
      st.hover[o.id] = t;
      show(nearest(t));
    },
    onpointerleave: () => { delete st.hover[o.id]; show(pts.length - 1); },
  }, s('title', {}, label), g, lines, cross);
  show(st.hover[o.id] != null && pts.length ? nearest(st.hover[o.id]) : pts.length - 1);
  return h('figure', { class: 'card chartbox' },
    h('figcaption', {}, h('h3', {}, o.title)), svg,
    h('div', { class: 'legend' }, o.series.map((se, k) => h('span', { class: 'li' },
      h('span', { class: 'sw', style: `background:${se.color}` }), se.name, ' ', vals[k])), when));
}

// ---------- topology graph ----------
// Up to a dozen sites sit on an ellipse; more go on a grid that grows downwards, with
// smaller nodes and shortened names (the full name is in each node's title and label).
const MANY_SITES = 12;
function layout(sites) {
  // By name (numbers in names in numeric order), so neighbours on the page are neighbours
  // in the list; the id breaks ties.
  const key = x => `${x.name || x.id}\u0000${x.id}`;
  const W = 1100, n = sites.length, pos = {};
  const ids = sites.slice().sort((a, b) => key(a).localeCompare(key(b), undefined, { numeric: true })).map(x => x.id);
  let H = 540;
  if (n <= MANY_SITES) {
    const rx = W / 2 - 170, ry = H / 2 - 120, cy = H / 2 + 15, start = -Math.PI / 2 - (n === 2 ? Math.PI / 2 : 0);
    ids.forEach((id, i) => {
      const a = start + (2 * Math.PI * i) / n;
      pos[id] = n === 1 ? { x: W / 2, y: cy } : { x: W / 2 + rx * Math.cos(a), y: cy + ry * Math.sin(a) };
    });
  } else {
    const cols = Math.min(8, Math.ceil(Math.sqrt(n * 2))), rows = Math.ceil(n / cols), m = 70, cw = (W - 2 * m) / cols, ch = 120;
    H = rows * ch + 20;
    ids.forEach((id, i) => {
      // Odd rows are shifted by half a cell, so links between rows do not run through nodes.
      const row = Math.floor(i / cols), col = i % cols;
      pos[id] = { x: m + cw * (col + 0.5 + (row % 2 ? 0.25 : -0.25)), y: 50 + row * ch };
    });
  }
  Object.defineProperty(pos, 'frame', { value: { w: W, h: H, compact: n > MANY_SITES } });
  return pos;
}
const shorten = (t, max) => (t.length > max ? t.slice(0, max - 1) + '…' : t);
const toward = (p, q, r) => {
  const dx = q.x - p.x, dy = q.y - p.y, l = Math.hypot(dx, dy) || 1;
  return { x: p.x + (dx / l) * r, y: p.y + (dy / l) * r };
};
function edgeGeom(a, b, off, r) {
  if (a === b) { // a loop above the node
    const k = 1 + Math.abs(off) / 20;
    return {
      d: `M${a.x - 14},${a.y - r + 2} C${a.x - 55 * k},${a.y - r - 70 * k} ${a.x + 55 * k},${a.y - r - 70 * k} ${a.x + 14},${a.y - r + 2}`,
      mid: { x: a.x, y: a.y - r - 52 * k },
    };
  }
  const dx = b.x - a.x, dy = b.y - a.y, l = Math.hypot(dx, dy) || 1, nx = -dy / l, ny = dx / l;
  const c = { x: (a.x + b.x) / 2 + nx * off * 2, y: (a.y + b.y) / 2 + ny * off * 2 };
  const p = toward(a, c, r + 2), q = toward(b, c, r + 6);
  return {
    d: `M${p.x.toFixed(1)},${p.y.toFixed(1)} Q${c.x.toFixed(1)},${c.y.toFixed(1)} ${q.x.toFixed(1)},${q.y.toFixed(1)}`,
    mid: { x: (p.x + 2 * c.x + q.x) / 4, y: (p.y + 2 * c.y + q.y) / 4 },
  };
}
// Spread edges between the same two sites so both directions stay readable.
function offsets(edges, gap) {
  const groups = new Map();
  for (const e of edges) {
    const k = [e.sourceSiteId, e.destSiteId].sort().join('\0');
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(e);
  }
  for (const g of groups.values()) g.forEach((e, i) => {
    const o = (i - (g.length - 1) / 2) * gap;
    e.off = e.sourceSiteId === e.destSiteId ? i * 30 : e.sourceSiteId <= e.destSiteId ? o : -o;
  });
}
function edgeLabel(mid, lines, cls) {
  // A plate behind the text, so the edge does not show through the gaps between words.
  const w = Math.max(...lines.map(t => t.length)) * 7.6 + 10, hh = lines.length * 15 + 4;
  return s('g', {},
    s('rect', { class: 'elabel-bg', x: mid.x - w / 2, y: mid.y - (lines.length - 1) * 7 - 11, width: w, height: hh, rx: 3 }),
    s('text', { class: `elabel ${cls}`, x: mid.x, y: mid.y - (lines.length - 1) * 7 + 4, 'text-anchor': 'middle' },
      lines.map((t, i) => s('tspan', { x: mid.x, dy: i ? 15 : 0 }, t))));
}
function graph(topo, mode, pos) {
  const frame = pos.frame || { w: 1100, h: 540, compact: false };
  const R = frame.compact ? 20 : 34, edges = [];
  const at = id => pos[id];
  if (mode === 'links') {
    const ls = topo.links.filter(l => at(l.sourceSiteId) && at(l.destSiteId)).map(l => ({ ...l }));
    offsets(ls, 44);
    for (const l of ls) {
      const up = l.state === 'up', cls = up ? 'up' : l.state === 'connecting' ? 'connecting' : 'down';
      const gm = edgeGeom(at(l.sourceSiteId), at(l.destSiteId), l.off, R);
      const desc = `${siteName(l.sourceSiteId)} to ${siteName(l.destSiteId)}: ${l.state}, cost ${l.cost}${l.role ? ', ' + l.role : ''}`;
      edges.push(s('g', { class: `edge link ${cls}` }, s('title', {}, desc),
        s('path', { d: gm.d, 'marker-end': `url(#m-${cls})` }),
        // Many sites: only links that are not plainly up at cost 1 are labelled.
        frame.compact && up && l.cost <= 1 ? null : edgeLabel(gm.mid, [`cost ${l.cost}${up ? '' : ' · ' + l.state}`], cls)));
    }
  } else {
    const ts = topo.traffic.filter(t => at(t.sourceSiteId) && at(t.destSiteId)).map(t => ({ ...t }));
    offsets(ts, 76);
    for (const t of ts) {
      const w = 1.5 + Math.min(12, Math.log10(1 + (t.bytesPerSecond || 0)) * 1.6);
      const gm = edgeGeom(at(t.sourceSiteId), at(t.destSiteId), t.off, R);
      const l2 = [perSec(t.connectionsPerSecond) + ' conn'];
      if (isHttp(t.protocol) || t.requestsPerSecond) l2.push(perSec(t.requestsPerSecond) + ' req');
      const desc = `Traffic ${siteName(t.sourceSiteId)} to ${siteName(t.destSiteId)}${t.address ? ' for ' + t.address : ''}: ` +
        `${rateB(t.bytesPerSecond)}, ${l2.join(', ')}, ${num(t.openConnections)} open`;
      edges.push(s('g', { class: 'edge traffic' }, s('title', {}, desc),
        s('path', { d: gm.d, style: `stroke-width:${w.toFixed(1)}px`, 'marker-end': 'url(#m-traffic)' }),
        edgeLabel(gm.mid, [rateB(t.bytesPerSecond), l2.join(' · ')], 'traffic')));
    }
  }
  const nodes = topo.sites.filter(x => pos[x.id]).map(x => {
    const p = pos[x.id], nr = (x.routers || []).length;
    const lbl = `Site ${x.name || x.id}, ${x.up === false ? 'down' : 'up'}, ${plural(nr, 'router')}, ` +
      `${x.mode || ''} ${x.version ? 'version ' + x.version : ''}. Offers ${plural((x.servicesOffered || []).length, 'service')}.`;
    return s('a', { href: `/sites/${enc(x.id)}`, tabindex: '0', 'aria-label': lbl, class: `node ${x.up === false ? 'down' : 'up'}`, 'data-fk': 'node:' + x.id },
      s('title', {}, lbl),
      s('circle', { cx: p.x, cy: p.y, r: R }),
      s('text', { class: 'ic', x: p.x, y: p.y + (frame.compact ? 5 : 6), 'text-anchor': 'middle' }, (x.name || x.id).slice(0, 2).toUpperCase()),
      s('text', { class: 'nname', x: p.x, y: p.y + R + 19, 'text-anchor': 'middle' }, shorten(x.name || x.id, frame.compact ? 16 : 28)),
      frame.compact ? null : s('text', { class: 'nsub', x: p.x, y: p.y + R + 35, 'text-anchor': 'middle' },
        `${plural(nr, 'router')}${x.mode ? ' · ' + x.mode : ''}${x.up === false ? ' · down' : ''}`));
  });
  const marker = id => s('marker', { id: 'm-' + id, class: 'mk-' + id, viewBox: '0 0 10 10', refX: 8, refY: 5, markerWidth: 10, markerHeight: 10, orient: 'auto-start-reverse', markerUnits: 'userSpaceOnUse' },
    s('path', { d: 'M0,0 L10,5 L0,10 z' }));
  return s('svg', { viewBox: `0 0 ${frame.w} ${frame.h}`, class: `graph${frame.compact ? ' compact' : ''}`, role: 'group', 'aria-label': mode === 'links' ? 'Sites and router links' : 'Sites and traffic between them' },
    s('defs', {}, ['up', 'down', 'connecting', 'traffic'].map(marker)),
    s('g', {}, edges), s('g', {}, nodes));
}

// ---------- views ----------
const CONN_COLS = [
  { label: 'State', sort: 'state', cell: c => badge(c.state) },
  { label: 'Address', sort: 'address', cell: c => svcLink(c.address) },
  { label: 'Source site', sort: 'sourceSiteId', cell: c => siteLink(c.sourceSiteId) },
  { label: 'Client', sort: 'clientAddr', cell: c => mono(c.clientAddr) },
  { label: 'Dest site', sort: 'destSiteId', cell: c => siteLink(c.destSiteId) },
  { label: 'Server', sort: 'serverAddr', cell: c => mono(c.serverAddr, c.path?.length ? 'path: ' + c.path.join(' → ') : null) },
  { label: 'Bytes out', sort: 'bytesOut', num: 1, cell: c => bytes(c.bytesOut) },
  { label: 'Bytes in', sort: 'bytesIn', num: 1, cell: c => bytes(c.bytesIn) },
  { label: 'Started', sort: 'startTime', desc: 1, cell: c => ago(c.startTime) },
  { label: 'Duration', sort: 'durationMs', num: 1, cell: c => dur(c.durationMs) },
  { label: 'Outcome', sort: 'outcome', cell: outcome },
  { label: 'Flow', sort: 'id', cell: c => mono(c.id) },
];
const REQ_COLS = [
  { label: 'Time', sort: 'startTime', desc: 1, cell: r => ago(r.startTime) },
  { label: 'Method', sort: 'method', cell: r => h('span', { class: 'mono' }, r.method || '–') },
  { label: 'Path', sort: 'path', cls: 'path', cell: r => mono(r.path, r.path) },
  { label: 'Status', sort: 'status', num: 1, cell: statusCell },
  { label: 'Latency', sort: 'latencyMs', num: 1, cell: r => dur(r.latencyMs) },
  { label: 'Address', sort: 'address', cell: r => svcLink(r.address) },
  { label: 'Source site', sort: 'sourceSiteId', cell: r => siteLink(r.sourceSiteId) },
  { label: 'Client', sort: 'clientAddr', cell: r => mono(r.clientAddr) },
  { label: 'Dest site', sort: 'destSiteId', cell: r => siteLink(r.destSiteId) },
  { label: 'Bytes out', sort: 'bytesOut', num: 1, cell: r => bytes(r.bytesOut) },
  { label: 'Bytes in', sort: 'bytesIn', num: 1, cell: r => bytes(r.bytesIn) },
  { label: 'Error', sort: 'error', cls: 'err', cell: r => (r.error ? h('span', { class: 'errtext', title: r.error }, r.error) : '') },
];
const LIMIT = 100;
const onSort = v => setQuery({ sortBy: v });

function flowView(title, path, cols, defs, noun) {
  return (c, main) => {
    const f = filters(defs), out = region();
    main.append(...page(title, f.form, out));
    return {
      title,
      sync: f.sync,
      async refresh(cx) {
        const q = Object.fromEntries(cx.query);
        q.sortBy ||= 'startTime.desc';
        const [r] = await Promise.all([api(url(path, { ...q, limit: LIMIT })), f.fill(), loadSites()]);
        swap(out, table(title, cols, r.items, { sortBy: q.sortBy, onSort, empty: `No ${noun} match.` }),
          pager(cx, r, LIMIT));
      },
    };
  };
}

const VIEWS = {
  notfound: (c, main) => {
    main.append(...page('Page not found', h('p', {}, 'Nothing lives at this address. ', h('a', { href: '/topology' }, 'Go to the topology'), '.')));
    return { title: 'Not found', refresh: async () => {} };
  },

  topology(c, main) {
    const modeName = 'f-mode';
    const radios = [['links', 'Router links'], ['traffic', 'Traffic']].map(([v, l]) => h('label', { class: 'seg' },
      h('input', { type: 'radio', name: modeName, value: v, onchange: () => setQuery({ show: v === 'links' ? '' : v }) }), l));
    const f = filters([{
      name: 'address', label: 'Traffic for service', type: 'select', all: 'All services', options: svcOpts,
      set: v => (v ? { address: v, show: 'traffic' } : { address: '' }),
    }]);
    f.form.prepend(h('fieldset', { class: 'field segs' }, h('legend', {}, 'Show'), radios));
    const gr = region('card graphbox'), legend = region('legend'), tbl = region();
    main.append(...page('Topology', f.form, gr, legend, h('h2', {}, 'Details'), tbl));
    let pos = {}, sig = '';
    return {
      title: 'Topology',
      sync(cx) {
        f.sync(cx);
        const m = cx.query.get('show') === 'traffic' ? 'traffic' : 'links';
        for (const r of radios) { const i = r.querySelector('input'); i.checked = i.value === m; }
      },
      async refresh(cx) {
        const address = cx.query.get('address') || '';
        const mode = cx.query.get('show') === 'traffic' ? 'traffic' : 'links';
        const [t] = await Promise.all([api(url('/api/v1/topology', { address })), f.fill()]);
        t.links = t.links || []; t.traffic = t.traffic || []; t.sites = t.sites || [];
        for (const x of t.sites) st.sites.set(x.id, x);
        const ns = t.sites.map(x => x.id).sort().join('\0');
        if (ns !== sig) { sig = ns; pos = layout(t.sites); }
        if (!t.sites.length) { swap(gr, empty('No sites yet: the console lists a site once it has read its records.')); swap(tbl); return; }
        swap(gr, graph(t, mode, pos));
        swap(legend, mode === 'links'
          ? [h('span', { class: 'li' }, h('span', { class: 'ln up' }), 'link up'), h('span', { class: 'li' }, h('span', { class: 'ln down' }), 'link down or failed'),
            h('span', { class: 'li' }, h('span', { class: 'ln connecting' }), 'connecting'), h('span', { class: 'muted' }, 'Arrows point from the site that made the link. Select a site to open it.')]
          : [h('span', { class: 'li' }, h('span', { class: 'ln traffic' }), 'traffic, client site → server site; wider is more bytes/s'),
            h('span', { class: 'muted' }, address ? `Service ${address} only.` : 'All services.')]);
        swap(tbl, mode === 'links'
          ? table('Router links between sites', [
            { label: 'From', cell: l => siteLink(l.sourceSiteId) }, { label: 'To', cell: l => siteLink(l.destSiteId) },
            { label: 'State', cell: l => badge(l.state) }, { label: 'Cost', num: 1, cell: l => num(l.cost) },
            { label: 'Role', cell: l => l.role || '–' }], t.links,
          { key: l => `${l.sourceSiteId}>${l.destSiteId}>${l.role}`, empty: 'No router links between sites.' })
          : table('Traffic between sites', [
            { label: 'From', cell: p => siteLink(p.sourceSiteId) }, { label: 'To', cell: p => siteLink(p.destSiteId) },
            { label: 'Service', cell: p => (p.address ? svcLink(p.address) : 'all') }, { label: 'Protocol', cell: p => p.protocol || '–' },
            { label: 'Byte rate', num: 1, cell: p => rateB(p.bytesPerSecond) }, { label: 'Connections/s', num: 1, cell: p => dec(p.connectionsPerSecond) },
            { label: 'Requests/s', num: 1, cell: p => dec(p.requestsPerSecond) }, { label: 'Open', num: 1, cell: p => num(p.openConnections) },
            { label: 'Bytes out / in', num: 1, cell: p => `${bytes(p.bytesOut)} / ${bytes(p.bytesIn)}` }], t.traffic,
          { empty: 'No traffic between sites yet.' }));
      },
    };
  },

  services(c, main) {
    const out = region();
    main.append(...page('Services', out));
    return {
      title: 'Services',
      async refresh(cx) {
        const q = Object.fromEntries(cx.query);
        q.sortBy ||= 'address.asc';
        const [r] = await Promise.all([api(url('/api/v1/services', { sortBy: q.sortBy, offset: q.offset, limit: LIMIT })), loadSites()]);
        swap(out, table('Services', [
          { label: 'Address', sort: 'address', cell: x => svcLink(x.address) },
          { label: 'Protocol', sort: 'protocol', cell: x => x.protocol || '–' },
          { label: 'Served by', cell: x => list(uniq((x.servedBy || []).map(e => e.siteId)), siteLink) },
          { label: 'Reached from', cell: x => list(uniq((x.reachedFrom || []).map(e => e.siteId)), siteLink) },
          { label: 'Open connections', sort: 'openConnections', num: 1, cell: x => num(x.openConnections) },
          { label: 'Connections', sort: 'connections', num: 1, cell: x => num(x.connections) },
          { label: 'Requests', sort: 'requests', num: 1, cell: x => (isHttp(x.protocol) || x.requests ? num(x.requests) : '–') },
          { label: 'Bytes out', sort: 'bytesOut', num: 1, cell: x => bytes(x.bytesOut) },
          { label: 'Bytes in', sort: 'bytesIn', num: 1, cell: x => bytes(x.bytesIn) },
        ], r.items, { key: x => x.address, sortBy: q.sortBy, onSort, empty: 'No services yet: expose one with a listener and a connector.' }),
        pager(cx, r, LIMIT));
      },
    };
  },

  service(c, main) {
    const addr = c.arg, ea = enc(addr);
    const head = region('sub'), stats = region('stats'), where = region('grid2'), charts = region('charts'), panel = region();
    const radios = Object.keys(WINDOWS).map(w => h('label', { class: 'seg' },
      h('input', { type: 'radio', name: 'f-window', value: w, onchange: () => setQuery({ window: w === '15m' ? '' : w }) }), w));
    const TABS = [['open', 'Open connections'], ['history', 'Connection history'], ['requests', 'HTTP requests']];
    const tabs = TABS.map(([k, l], i) => h('button', {
      type: 'button', role: 'tab', id: 'tab-' + k, 'aria-controls': 'tabpanel', 'data-tab': k,
      onclick: () => setQuery({ tab: i ? k : '' }, true),
      onkeydown: e => {
        const d = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
        if (!d) return;
        const vis = tabs.filter(t => !t.hidden), j = (vis.indexOf(e.currentTarget) + d + vis.length) % vis.length;
        vis[j].focus(); vis[j].click();
      },
    }, l));
    const tabpanel = h('div', { role: 'tabpanel', id: 'tabpanel', tabindex: '0' }, panel);
    main.append(h('p', { class: 'crumb' }, h('a', { href: '/services' }, 'Services'), ' / '),
      ...page(addr, head, stats, where,
        h('div', { class: 'h2row' }, h('h2', {}, 'Traffic'),
          h('fieldset', { class: 'segs' }, h('legend', { class: 'sr-only' }, 'Time window'), radios)),
        charts, h('div', { role: 'tablist', 'aria-label': 'Flows', class: 'tabs' }, tabs), tabpanel));
    const endpoints = (caption, items, kind) => h('section', { class: 'card' }, h('h2', {}, caption),
      table(caption, [
        { label: 'Site', cell: e => siteLink(e.siteId) }, { label: 'Router', cell: e => mono(e.routerId) },
        { label: kind === 'connector' ? 'Connector' : 'Listener', cell: e => e[kind] || '–' },
        { label: 'Host:port', cell: e => mono(e.host != null ? `${e.host}:${e.port}` : '') }],
      items || [], { key: e => `${e.routerId}/${e[kind]}`, empty: kind === 'connector' ? 'No connectors: nothing serves this address.' : 'No listeners.' }));
    return {
      title: addr,
      sync(cx) {
        const w = WINDOWS[cx.query.get('window')] ? cx.query.get('window') : '15m';
        for (const r of radios) { const i = r.querySelector('input'); i.checked = i.value === w; }
      },
      async refresh(cx) {
        const wk = WINDOWS[cx.query.get('window')] ? cx.query.get('window') : '15m', [win, step] = WINDOWS[wk];
        let tab = cx.query.get('tab') || 'open';
        let sv;
        try {
          sv = await api(`/api/v1/services/${ea}`);
        } catch (e) {
          if (e.status !== 404) throw e;
          swap(head, problem(e)); swap(stats); swap(where); swap(charts); swap(panel);
          return;
        }
        const http = isHttp(sv.protocol);
        tabs[2].hidden = !http;
        if (!http && tab === 'requests') tab = 'open';
        const flowUrl = tab === 'requests' ? '/api/v1/requests' : '/api/v1/connections';
        const [ser, fl] = await Promise.all([
          api(url(`/api/v1/services/${ea}/series`, { window: win, step })),
          api(url(flowUrl, { address: addr, state: tab === 'open' ? 'active' : tab === 'history' ? 'terminated' : '', limit: 25 })),
          loadSites(),
        ]);
        swap(head, badge(sv.protocol || 'tcp', 'proto'));
        swap(stats, stat('open connections', num(sv.openConnections)), stat('connections', num(sv.connections)),
          http ? stat('requests', num(sv.requests)) : null, stat('bytes out', bytes(sv.bytesOut)), stat('bytes in', bytes(sv.bytesIn)));
        swap(where, endpoints('Served by', sv.servedBy, 'connector'), endpoints('Reached from', sv.reachedFrom, 'listener'));
        const pts = ser.points || [], cw = { points: pts, win, winLabel: WIN_TEXT[wk] };
        const any = k => pts.some(p => p[k] > 0);
        swap(charts,
          chart({ ...cw, id: 'b', title: 'Byte rate', axis: 'bytes/s', bytes: 1, fmt: rateB, series: [{ name: 'out', key: 'bytesOut', color: 'var(--c1)' }, { name: 'in', key: 'bytesIn', color: 'var(--c2)' }] }),
          chart({ ...cw, id: 'c', title: 'Connection rate', axis: 'connections/s', fmt: perSec, series: [{ name: 'opened', key: 'connectionsOpened', color: 'var(--c1)' }] }),
          http || any('requests2xx') ? chart({
            ...cw, id: 'r', title: 'Request rate by status', axis: 'requests/s', fmt: perSec, series: [
              { name: '2xx', key: 'requests2xx', color: 'var(--ok)' }, { name: '3xx', key: 'requests3xx', color: 'var(--c1)' },
              { name: '4xx', key: 'requests4xx', color: 'var(--warn)' }, { name: '5xx', key: 'requests5xx', color: 'var(--bad)' },
              { name: 'errors', key: 'requestsErr', color: 'var(--c5)' }],
          }) : null,
          http || any('latencyP50Ms') ? chart({
            ...cw, id: 'l', title: 'Latency', axis: 'milliseconds', fmt: dur, series: [
              { name: 'p50', key: 'latencyP50Ms', color: 'var(--ok)' }, { name: 'p90', key: 'latencyP90Ms', color: 'var(--warn)' },
              { name: 'p99', key: 'latencyP99Ms', color: 'var(--bad)' }],
          }) : null);
        for (const t of tabs) {
          const on = t.dataset.tab === tab;
          t.setAttribute('aria-selected', on);
          t.tabIndex = on ? 0 : -1;
          if (on) tabpanel.setAttribute('aria-labelledby', t.id);
        }
        const more = tab === 'requests' ? url('/requests', { address: addr })
          : url('/connections', { address: addr, state: tab === 'open' ? 'active' : 'terminated' });
        const cols = tab === 'requests' ? REQ_COLS.filter(x => x.sort !== 'address') : CONN_COLS.filter(x => x.sort !== 'address');
        swap(panel, table(TABS.find(x => x[0] === tab)[1], cols, fl.items, { empty: tab === 'open' ? 'No open connections.' : 'Nothing yet.' }),
          h('p', { class: 'more' }, `${num(fl.count)} of ${num(fl.total)} shown. `, h('a', { href: more }, `See all in ${tab === 'requests' ? 'Requests' : 'Connections'} ›`)));
      },
    };
  },

  sites(c, main) {
    const out = region();
    main.append(...page('Sites', out));
    return {
      title: 'Sites',
      async refresh(cx) {
        const q = Object.fromEntries(cx.query);
        q.sortBy ||= 'name.asc';
        const [r, ls] = await Promise.all([api(url('/api/v1/sites', { sortBy: q.sortBy, offset: q.offset, limit: LIMIT })),
          api('/api/v1/links?limit=10000'), loadSites(true)]);
        const lk = {};
        for (const l of ls.items) { const e = lk[l.siteId] ||= { up: 0, n: 0 }; e.n++; if (l.state === 'up') e.up++; }
        swap(out, table('Sites', [
          { label: 'Name', sort: 'name', cell: x => h('a', { href: `/sites/${enc(x.id)}` }, x.name || x.id) },
          { label: 'Status', sort: 'up', cell: x => badge(x.up === false ? 'down' : 'up') },
          { label: 'Mode', sort: 'mode', cell: x => x.mode || '–' },
          { label: 'Version', sort: 'version', cell: x => x.version || '–' },
          { label: 'Routers', num: 1, cell: x => num((x.routers || []).length) },
          { label: 'Links up', num: 1, sort: 'links', cell: x => { const e = lk[x.id]; return e ? h('span', { class: e.up < e.n ? 'badtext' : null }, `${e.up} / ${e.n}`) : num(x.links); } },
          { label: 'Offers', cell: x => list(x.servicesOffered, svcLink) },
          { label: 'Consumes', cell: x => list(x.servicesConsumed, svcLink) },
          { label: 'Id', sort: 'id', cell: x => mono(x.id) },
        ], r.items, { sortBy: q.sortBy, onSort, empty: 'No sites yet.' }), pager(cx, r, LIMIT));
      },
    };
  },

  site(c, main) {
    const id = c.arg, head = region('sub'), alerts = region(), body = region();
    main.append(h('p', { class: 'crumb' }, h('a', { href: '/sites' }, 'Sites'), ' / '), ...page(siteName(id), head, alerts, body));
    const h1 = $('h1', main);
    return {
      title: siteName(id),
      async refresh() {
        let x;
        try {
          x = await api(`/api/v1/sites/${enc(id)}`);
        } catch (e) {
          if (e.status !== 404) throw e;
          swap(head, problem(e)); swap(alerts); swap(body);
          return;
        }
        const [rs, ls, pairs] = await Promise.all([api(url('/api/v1/routers', { siteId: id, limit: 10000 })),
          api(url('/api/v1/links', { siteId: id, limit: 10000 })), api('/api/v1/sitepairs?limit=10000'), loadSites()]);
        if (h1.textContent !== (x.name || id)) { h1.textContent = x.name || id; document.title = `${h1.textContent} · VAN console`; }
        swap(head, badge(x.up === false ? 'down' : 'up'), ' ', [x.mode, x.version && 'version ' + x.version, 'id '].filter(Boolean).join(' · '), mono(x.id));
        const bad = ls.items.filter(l => l.state !== 'up');
        swap(alerts, bad.length ? h('div', { class: 'alert' }, h('h2', {}, `${plural(bad.length, 'link')} not up`),
          h('ul', {}, bad.map(l => h('li', {}, h('strong', {}, l.name), ` (${l.direction || 'link'} to `, siteLink(l.peerSiteId),
            `) is ${l.state}`, l.lastError ? [': ', h('span', { class: 'reason' }, l.lastError)] : '.')))) : null);
        const mine = pairs.items.filter(p => p.sourceSiteId === id || p.destSiteId === id);
        swap(body,
          h('section', {}, h('h2', {}, 'Routers'), table('Routers', [
            { label: 'Router', cell: r => mono(r.id) }, { label: 'Status', cell: r => badge(r.up === false ? 'down' : 'up') },
            { label: 'Host', cell: r => r.hostname || '–' }, { label: 'Mode', cell: r => r.mode || '–' },
            { label: 'Version', cell: r => r.version || '–' }, { label: 'Started', cell: r => ago(r.startTime) },
            { label: 'Active flows', num: 1, cell: r => num(r.activeFlows) }, { label: 'Flows', num: 1, cell: r => num(r.flowsTotal) }],
          rs.items, { empty: 'No routers.' })),
          h('section', {}, h('h2', {}, 'Links'), table('Links', [
            { label: 'Link', cell: l => mono(l.name, l.id) }, { label: 'Router', cell: l => mono(l.routerId) },
            { label: 'Direction', cell: l => (l.direction === 'incoming' ? '← incoming' : l.direction === 'outgoing' ? '→ outgoing' : l.direction || '–') },
            { label: 'Peer', cell: l => [siteLink(l.peerSiteId), ' ', mono(l.peerRouterId)] },
            { label: 'Role', cell: l => l.role || '–' }, { label: 'State', cell: l => badge(l.state) },
            { label: 'Cost', num: 1, cell: l => num(l.cost) }, { label: 'Up for', num: 1, cell: l => (l.state === 'up' ? dur((l.upSeconds || 0) * 1000) : '–') },
            { label: 'Bytes out / in', num: 1, cell: l => `${bytes(l.bytesOut)} / ${bytes(l.bytesIn)}` },
            { label: 'Errors', num: 1, cell: l => num(l.errors) },
            { label: 'Last error', cls: 'err', cell: l => (l.lastError ? h('span', { class: 'reason' }, l.lastError) : '') }],
          ls.items, { empty: 'No links.' })),
          h('div', { class: 'grid2' },
            h('section', { class: 'card' }, h('h2', {}, 'Services offered'), x.servicesOffered?.length
              ? h('ul', { class: 'plain' }, x.servicesOffered.map(a => h('li', {}, svcLink(a)))) : empty('None.')),
            h('section', { class: 'card' }, h('h2', {}, 'Services consumed'), x.servicesConsumed?.length
              ? h('ul', { class: 'plain' }, x.servicesConsumed.map(a => h('li', {}, svcLink(a)))) : empty('None.'))),
          h('section', {}, h('h2', {}, 'Traffic with other sites'), table('Traffic', [
            { label: 'Direction', cell: p => (p.sourceSiteId === id ? (p.destSiteId === id ? '↺ within' : '→ to') : '← from') },
            { label: 'Site', cell: p => siteLink(p.sourceSiteId === id ? p.destSiteId : p.sourceSiteId) },
            { label: 'Service', cell: p => (p.address ? svcLink(p.address) : 'all') },
            { label: 'Connections', num: 1, cell: p => num(p.connections) }, { label: 'Open', num: 1, cell: p => num(p.openConnections) },
            { label: 'Requests', num: 1, cell: p => num(p.requests) },
            { label: 'Bytes out / in', num: 1, cell: p => `${bytes(p.bytesOut)} / ${bytes(p.bytesIn)}` }],
          mine, { empty: 'No traffic yet.' })));
      },
    };
  },

  connections: flowView('Connections', '/api/v1/connections', CONN_COLS, [
    { name: 'q', label: 'Search', type: 'search', placeholder: 'address, client or server' },
    { name: 'address', label: 'Service', type: 'select', all: 'All services', options: svcOpts },
    { name: 'sourceSiteId', label: 'Source site', type: 'select', all: 'Any site', options: siteOpts },
    { name: 'destSiteId', label: 'Dest site', type: 'select', all: 'Any site', options: siteOpts },
    { name: 'state', label: 'State', type: 'select', options: [['', 'All'], ['active', 'Active'], ['terminated', 'Terminated']] },
    { name: 'outcome', label: 'Outcome', type: 'select', options: [['', 'Any'], ...['closed', 'reset', 'refused', 'no-target', 'link-lost', 'deleted', 'socket-error'].map(o => [o, o])] },
  ], 'connections'),

  requests: flowView('Requests', '/api/v1/requests', REQ_COLS, [
    { name: 'q', label: 'Search', type: 'search', placeholder: 'address, client or server' },
    { name: 'address', label: 'Service', type: 'select', all: 'All services', options: svcOpts },
    { name: 'method', label: 'Method', type: 'select', options: [['', 'Any'], ...['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'].map(m => [m, m])] },
    { name: 'statusClass', label: 'Status', type: 'select', options: [['', 'Any'], ...['1xx', '2xx', '3xx', '4xx', '5xx', 'error'].map(m => [m, m])] },
    { name: 'sourceSiteId', label: 'Source site', type: 'select', all: 'Any site', options: siteOpts },
    { name: 'destSiteId', label: 'Dest site', type: 'select', all: 'Any site', options: siteOpts },
  ], 'requests'),
};

start();
