// Polls /api/metrics every 2 s and renders it. Text only goes in with textContent: argv
// is whatever clients ran and must never be parsed as HTML.
'use strict';
let refreshes = 0;

const $ = (id) => document.getElementById(id);
const fmtBytes = (n) => {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
};
const fmtPct = (p) => (p === null || p === undefined ? '–' : p.toFixed(1));
const fmtSecs = (s) => {
  if (s === null || s === undefined) return '–';
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.floor(s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
};
const orDash = (v) => (v === null || v === undefined ? '–' : String(v));

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function render(m) {
  const s = m.server;
  $('s-uptime').textContent = fmtSecs(s.uptime_seconds);
  $('s-cpu').textContent = fmtPct(s.cpu_percent) + ' %';
  $('s-rss').textContent = fmtBytes(s.rss_bytes);
  $('s-tasks').textContent = orDash(s.tokio_tasks_alive);
  $('s-connections').textContent = orDash(s.connections);
  $('s-subscribers').textContent = orDash(s.subscribers);
  $('s-dispatch').textContent = orDash(s.dispatch_queue_depth);
  $('s-delivery').textContent = orDash(s.delivery_queue_depth);
  $('s-dropped').textContent = orDash(s.dropped_spans);
  $('s-backlog').textContent = orDash(s.store_backlog);
  $('busy-threshold').textContent = String(m.busy_cpu_percent);
  $('ttl').textContent = String(m.reap_ttl_seconds);
  $('count').textContent = '(' + m.workers.length + ')';

  const body = document.createElement('tbody');
  body.id = 'workers';
  if (m.workers.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(tr, 'no child processes', 'empty');
    td.colSpan = 12;
    body.appendChild(tr);
  }
  for (const w of m.workers) {
    const tr = document.createElement('tr');
    tr.dataset.pid = String(w.pid);
    const classes = [];
    if (w.busy) classes.push('busy');
    if (w.zombie) classes.push('zombie');
    tr.className = classes.join(' ');
    cell(tr, String(w.pid), 'pid');
    cell(tr, String(w.process_id));
    const cmd = cell(tr, w.argv.join(' '), 'cmd');
    cmd.title = w.argv.join(' ');
    cell(tr, w.state, 'state');
    cell(tr, fmtPct(w.cpu_percent), 'num cpu');
    cell(tr, fmtBytes(w.rss_bytes), 'num');
    cell(tr, fmtPct(w.tree_cpu_percent), 'num tree-cpu');
    cell(tr, fmtBytes(w.tree_rss_bytes), 'num tree-rss');
    cell(tr, orDash(w.descendants), 'num descendants');
    cell(tr, new Date(w.started_unix_ms).toLocaleTimeString());
    cell(tr, fmtSecs(w.idle_seconds), 'num');
    const flags = cell(tr, '', 'flags');
    for (const c of classes) {
      const chip = document.createElement('span');
      chip.className = 'chip ' + c;
      chip.textContent = c === 'zombie' && w.zombie_reason ? 'zombie (' + w.zombie_reason.replace(/_/g, ' ') + ')' : c;
      flags.appendChild(chip);
    }
    body.appendChild(tr);
  }
  $('workers').replaceWith(body);
  $('sample').textContent = String(m.sample);
  $('updated').textContent = new Date(m.sampled_unix_ms).toLocaleTimeString();
}

async function refresh() {
  try {
    const r = await fetch('/api/metrics', { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) {
      $('error').textContent = 'not signed in: open /login';
      return;
    }
    if (!r.ok) {
      $('error').textContent = 'HTTP ' + r.status;
      return;
    }
    render(await r.json());
    $('error').textContent = '';
    refreshes += 1;
    $('refreshes').textContent = String(refreshes);
  } catch (e) {
    $('error').textContent = 'cannot reach the server: ' + e;
  }
}

refresh();
setInterval(refresh, 2000);
