// martelli dashboard: the page's script. No framework, no build step.
//
// Rule: everything that comes from the broker is put in the page as text (textContent, text
// nodes, attribute values set through the DOM), never parsed as HTML. There is no innerHTML here.
'use strict';

(() => {
  const PAGE = 50; // rows per page of workers, dead letters and delayed tasks
  const MAX_QUEUE_ROWS = 100; // queues listed in the table

  const $ = (id) => document.getElementById(id);

  // An element with properties and children; strings become text nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const state = {
    config: null,
    samples: [],
    capacity: 900,
    workers: [],
    error: null,
    queue: null,
    queueList: '',
    view: 'queues',
    workersPage: 0,
    dead: { start: null, page: null, loading: false, pending: null },
    delayedOffset: 0,
    platformLoading: false,
  };

  // ---- formatting -------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, '0');
  function clock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function when(ms) {
    const d = new Date(ms);
    const today = new Date();
    const day = d.toDateString() === today.toDateString() ? '' : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `;
    return day + clock(ms);
  }
  function span(ms) {
    const s = Math.abs(ms) / 1000;
    if (s < 1) return `${Math.round(Math.abs(ms))} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }
  const ago = (ms) => `${span(Date.now() - ms)} ago`;
  const rate = (v) => (v === null || v === undefined ? '–' : v < 10 ? v.toFixed(1) : String(Math.round(v)));
  const orDash = (v) => (v === null || v === undefined || v === '' ? '–' : String(v));
  function bytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  // ---- talking to the dashboard -----------------------------------------------------------

  async function api(path, method) {
    const options = { method: method || 'GET', credentials: 'same-origin', headers: {} };
    if (options.method !== 'GET') options.headers['X-CSRF-Token'] = state.config.csrf;
    const response = await fetch(path, options);
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
    return body;
  }
  const queuePath = (name) => `api/queues/${encodeURIComponent(name)}`;

  function notice(text, bad) {
    const box = $('notice');
    box.textContent = text;
    box.classList.toggle('bad', !!bad);
    box.hidden = false;
  }

  function setLive(on) {
    const badge = $('live');
    const last = state.samples[state.samples.length - 1];
    badge.textContent = on ? `live · ${last ? clock(last.at_ms) : '…'}` : 'reconnecting…';
    badge.classList.toggle('off', !on);
  }

  // ---- the live feed ----------------------------------------------------------------------

  function connect() {
    const source = new EventSource('api/events');
    source.addEventListener('tick', (event) => {
      const tick = JSON.parse(event.data);
      if (tick.sample) {
        const last = state.samples[state.samples.length - 1];
        if (!last || last.at_ms !== tick.sample.at_ms) {
          state.samples.push(tick.sample);
          while (state.samples.length > state.capacity) state.samples.shift();
        }
      }
      state.workers = tick.workers || [];
      state.error = tick.error;
      setLive(true);
      render();
    });
    source.addEventListener('error', () => setLive(false));
  }

  const latest = () => state.samples[state.samples.length - 1];
  const latestQueue = (name) => (latest() ? latest().queues.find((q) => q.name === name) : undefined);

  function render() {
    const banner = $('error');
    banner.hidden = !state.error;
    banner.textContent = state.error || '';
    renderQueuePicker();
    const q = latestQueue(state.queue);
    $('dead-count').textContent = q && q.dead ? String(q.dead) : '';
    if (state.view === 'queues') renderQueues();
    if (state.view === 'workers') renderWorkers();
    if (state.view === 'dead') refreshDeadIfChanged();
    if (state.view === 'platform' && !state.platformLoading) loadPlatform();
  }

  function renderQueuePicker() {
    const sample = latest();
    if (!sample) return;
    const names = sample.queues.map((q) => q.name);
    if (!state.queue || !names.includes(state.queue)) {
      state.queue = names.includes('default') ? 'default' : names[0] || null;
    }
    const key = names.join('\u0000');
    const select = $('queue');
    if (key !== state.queueList) {
      state.queueList = key;
      select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
    }
    if (state.queue !== null) select.value = state.queue;
  }

  function pickQueue(name) {
    if (name === state.queue) return;
    state.queue = name;
    state.dead = { start: null, page: null, loading: false, pending: null };
    state.delayedOffset = 0;
    $('dead-detail').hidden = true;
    $('notice').hidden = true;
    render();
    show(state.view);
  }

  // ---- queues -----------------------------------------------------------------------------

  function renderQueues() {
    const sample = latest();
    const body = $('queues-table').tBodies[0];
    if (!sample) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'waiting for the first reading…')));
      return;
    }
    const rows = [];
    const priorities = ['high', 'normal', 'low'];
    for (const q of sample.queues.slice(0, MAX_QUEUE_ROWS)) {
      const selected = q.name === state.queue;
      rows.push(el('tr', { class: selected ? 'total selected' : 'total', 'data-queue': q.name, onclick: () => pickQueue(q.name) },
        el('td', {}, q.name), el('td', { class: 'muted' }, 'all'),
        el('td', { class: 'n' }, q.waiting), el('td', { class: 'n' }, q.held),
        el('td', { class: 'n' }, q.delayed), el('td', { class: q.dead ? 'n warn' : 'n' }, q.dead),
        el('td', { class: 'n' }, rate(q.submitted_per_s)), el('td', { class: 'n' }, rate(q.completed_per_s)),
        el('td', { class: 'n' }, q.oldest_waiting_ms === null ? '–' : span(q.oldest_waiting_ms))));
      q.streams.forEach(([waiting, held], i) => {
        rows.push(el('tr', { class: 'priority', 'data-queue': q.name, 'data-priority': priorities[i] },
          el('td', {}), el('td', {}, priorities[i]),
          el('td', { class: 'n' }, waiting), el('td', { class: 'n' }, held),
          el('td', {}), el('td', {}), el('td', {}), el('td', {}), el('td', {})));
      });
    }
    body.replaceChildren(...rows);
    const more = $('queues-more');
    more.hidden = sample.queues.length <= MAX_QUEUE_ROWS;
    more.textContent = `${sample.queues.length - MAX_QUEUE_ROWS} more queues: pick one above the table`;
    renderCharts();
  }

  function renderCharts() {
    for (const label of document.querySelectorAll('.chart-queue')) label.textContent = state.queue || '';
    const times = [];
    const submitted = [];
    const completed = [];
    const oldest = [];
    const mean = [];
    for (const sample of state.samples) {
      const q = sample.queues.find((x) => x.name === state.queue);
      times.push(sample.at_ms);
      submitted.push(q ? q.submitted_per_s : null);
      completed.push(q ? q.completed_per_s : null);
      oldest.push(q && q.oldest_waiting_ms !== null ? q.oldest_waiting_ms / 1000 : q ? 0 : null);
      mean.push(q && q.mean_in_queue_ms !== null ? q.mean_in_queue_ms / 1000 : null);
    }
    chart($('chart-throughput'), times, [submitted, completed]);
    chart($('chart-latency'), times, [oldest, mean]);
    $('history-span').textContent = times.length > 1
      ? `${span(times[times.length - 1] - times[0])} of history, one reading every ${span(state.config.interval_ms)} (kept by the dashboard: a reload keeps it)`
      : '';
  }

  // A line chart on a canvas: one line per series, a zero baseline, four grid lines.
  function chart(canvas, times, series) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 900;
    const height = canvas.clientHeight || 180;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 52;
    const right = 10;
    const top = 8;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    let max = 0;
    for (const values of series) for (const v of values) if (v !== null && v > max) max = v;
    max = niceCeiling(max);
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + (plotH * i) / 4;
      ctx.strokeStyle = i === 4 ? '#9ca3af' : '#e5e7eb';
      ctx.beginPath();
      ctx.moveTo(left, y + 0.5);
      ctx.lineTo(width - right, y + 0.5);
      ctx.stroke();
      ctx.fillStyle = '#6b7280';
      ctx.textAlign = 'right';
      ctx.fillText(tickLabel((max * (4 - i)) / 4), left - 6, y + 4);
    }
    if (times.length === 0) return;
    const t0 = times[0];
    const t1 = times[times.length - 1];
    const extent = Math.max(t1 - t0, 1);
    ctx.textAlign = 'left';
    ctx.fillText(clock(t0), left, height - 5);
    ctx.textAlign = 'right';
    ctx.fillText(clock(t1), width - right, height - 5);
    const colours = ['#2563eb', '#16a34a'];
    series.forEach((values, s) => {
      ctx.strokeStyle = colours[s % colours.length];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let drawing = false;
      values.forEach((v, i) => {
        if (v === null || v === undefined) {
          drawing = false;
          return;
        }
        const x = left + ((times[i] - t0) / extent) * plotW;
        const y = top + plotH - (v / max) * plotH;
        if (drawing) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        drawing = true;
      });
      ctx.stroke();
    });
  }

  function niceCeiling(v) {
    if (!(v > 0)) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 4, 6, 8, 10]) if (v <= step * magnitude) return step * magnitude;
    return 10 * magnitude;
  }
  const tickLabel = (v) => (v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2));

  // ---- workers ----------------------------------------------------------------------------

  function renderWorkers() {
    const filter = $('workers-filter').value.trim().toLowerCase();
    const all = state.workers;
    const shown = filter
      ? all.filter((w) => [w.host, w.consumer, w.queue || ''].some((s) => s.toLowerCase().includes(filter)))
      : all;
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.workersPage = Math.min(state.workersPage, pages - 1);
    const first = state.workersPage * PAGE;
    const alive = all.filter((w) => w.alive).length;
    $('workers-summary').textContent = `${alive} alive, ${all.length - alive} gone` + (filter ? `; ${shown.length} match` : '');
    const rows = shown.slice(first, first + PAGE).map((w) => {
      let since;
      if (w.alive) since = w.before_start ? `alive (seen since ${when(w.since_ms)})` : `alive since ${when(w.since_ms)}`;
      else since = `gone since ${when(w.since_ms)} (${ago(w.since_ms)})`;
      return el('tr', { class: w.alive ? 'alive' : 'gone', 'data-consumer': w.consumer },
        el('td', {}, w.host), el('td', { class: 'mono' }, w.consumer), el('td', { class: 'n' }, orDash(w.pid)),
        el('td', {}, orDash(w.queue)), el('td', { class: 'n' }, orDash(w.concurrency)),
        el('td', { class: 'n' }, w.held), el('td', { class: 'n' }, w.succeeded), el('td', { class: 'n' }, w.failed),
        el('td', { class: 'n' }, w.dead_lettered), el('td', { class: 'state' }, since));
    });
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 10, class: 'muted' }, 'no workers (none has a heartbeat under this prefix)')));
    $('workers-table').tBodies[0].replaceChildren(...rows);
    pager($('workers-pager'), state.workersPage, pages, shown.length, (page) => {
      state.workersPage = page;
      renderWorkers();
    });
  }

  function pager(box, page, pages, total, go) {
    box.replaceChildren(
      el('button', { type: 'button', disabled: page === 0, onclick: () => go(page - 1) }, '‹ Previous'),
      el('span', { class: 'muted' }, total ? ` ${page * PAGE + 1}–${Math.min(total, (page + 1) * PAGE)} of ${total} ` : ' none '),
      el('button', { type: 'button', disabled: page >= pages - 1, onclick: () => go(page + 1) }, 'Next ›'));
  }

  // ---- dead letters -----------------------------------------------------------------------

  async function loadDead(start) {
    const queue = state.queue;
    if (queue === null) return;
    let path = `${queuePath(queue)}/dead?count=${PAGE}`;
    if (start && start.before) path += `&before=${encodeURIComponent(start.before)}`;
    if (start && start.after) path += `&after=${encodeURIComponent(start.after)}`;
    state.dead.loading = true;
    try {
      const page = await api(path);
      if (queue !== state.queue) return;
      if (start && page.letters.length === 0) {
        // The letters around the cursor are gone (requeued or discarded): back to the newest.
        state.dead.loading = false;
        await loadDead(null);
        return;
      }
      state.dead.page = page;
      state.dead.start = start;
      renderDead();
    } catch (e) {
      notice(`cannot read the dead letters: ${e.message}`, true);
    } finally {
      state.dead.loading = false;
    }
  }

  // On the newest page, a change in the number of dead letters reloads the page.
  function refreshDeadIfChanged() {
    const q = latestQueue(state.queue);
    const page = state.dead.page;
    if (!q || state.dead.loading || state.dead.start) return;
    if (!page || page.total !== q.dead) loadDead(null);
  }

  function renderDead() {
    const page = state.dead.page;
    if (!page) return;
    const readOnly = state.config.read_only;
    $('dead-summary').textContent = `${page.total} dead letter${page.total === 1 ? '' : 's'} in queue ${state.queue}`;
    const rows = page.letters.map((d) => el('tr', { 'data-letter': d.letter },
      el('td', { title: d.letter }, d.at_ms ? when(d.at_ms) : '–'),
      el('td', { class: 'mono clip', title: d.id }, d.id ? el('a', { href: `#task/${encodeURIComponent(d.id)}` }, d.id) : '–'),
      el('td', { class: 'mono clip', title: d.task }, orDash(d.task)),
      el('td', { class: 'reason', title: d.reason }, d.reason),
      el('td', { class: 'n' }, orDash(d.attempts)),
      el('td', { class: 'mono clip', title: d.worker }, orDash(d.worker)),
      el('td', { class: 'n' }, bytes(d.size) + (d.truncated ? ' (sample)' : '')),
      el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'inspect', onclick: () => inspectDead(d.letter) }, 'Inspect'),
        readOnly ? null : el('button', {
          type: 'button', class: 'requeue', disabled: !d.requeueable,
          title: d.requeueable ? 'queue the task again, with its attempts reset' : 'this letter keeps no whole task to queue again',
          onclick: () => act(`${queuePath(state.queue)}/dead/${encodeURIComponent(d.letter)}/requeue`, 'requeue'),
        }, 'Requeue'),
        readOnly ? null : el('button', {
          type: 'button', class: 'discard danger',
          onclick: () => confirmThen(`Discard dead letter ${d.letter}${d.id ? ` (task ${d.id})` : ''}? It cannot be undone.`,
            () => act(`${queuePath(state.queue)}/dead/${encodeURIComponent(d.letter)}/discard`, 'discard')),
        }, 'Discard'))));
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'no dead letters')));
    $('dead-table').tBodies[0].replaceChildren(...rows);
    $('dead-newer').disabled = !page.newer;
    $('dead-newest').disabled = !state.dead.start;
    $('dead-older').disabled = !page.older;
    $('dead-requeue-all').disabled = page.total === 0;
    $('dead-discard-all').disabled = page.total === 0;
  }

  function confirmThen(text, action) {
    $('dead-confirm-text').textContent = text;
    state.dead.pending = action;
    $('dead-confirm').hidden = false;
  }

  async function act(path, what) {
    $('dead-confirm').hidden = true;
    try {
      const done = await api(path, 'POST');
      const skipped = done.skipped ? `, ${done.skipped} left in place (they keep no whole task to run again)` : '';
      notice(`${what}: ${done.done} dead letter${done.done === 1 ? '' : 's'}${skipped}`);
    } catch (e) {
      notice(`${what} failed: ${e.message}`, true);
    }
    $('dead-detail').hidden = true;
    await loadDead(state.dead.start);
  }

  async function inspectDead(letter) {
    try {
      const d = await api(`${queuePath(state.queue)}/dead/${encodeURIComponent(letter)}`);
      const box = $('dead-detail');
      box.replaceChildren(
        el('button', { type: 'button', class: 'close', onclick: () => { box.hidden = true; } }, 'Close'),
        el('h3', {}, `Dead letter ${d.letter}`),
        fields([
          ['reason', d.reason],
          ['dead-lettered', d.at_ms ? `${when(d.at_ms)} (${ago(d.at_ms)})` : null],
          ['by worker', d.worker],
          ['attempts', d.attempts],
          ['from stream', d.stream ? `${d.stream} (entry ${orDash(d.entry)})` : null],
          ['task id', d.id ? el('a', { href: `#task/${encodeURIComponent(d.id)}` }, d.id) : null],
          ['task', d.task],
          ['kept', `${bytes(d.size)}${d.truncated ? ': only a sample of an oversized entry' : ''}`],
          ['envelope', d.envelope_error],
        ]),
        d.envelope ? envelopeView(d.envelope) : null);
      box.hidden = false;
    } catch (e) {
      notice(`cannot read dead letter ${letter}: ${e.message}`, true);
    }
  }

  // ---- a task, an envelope, a payload -----------------------------------------------------

  function fields(pairs) {
    const list = el('dl', {});
    for (const [name, value] of pairs) {
      if (value === null || value === undefined || value === '') continue;
      list.append(el('dt', {}, name), el('dd', {}, value instanceof Node ? value : String(value)));
    }
    return list;
  }

  function payloadView(title, p) {
    return el('div', { class: 'payload' },
      el('h4', {}, `${title}: ${bytes(p.size)}, ${p.format}${p.truncated ? ', preview cut' : ''}`),
      el('pre', { class: 'preview' }, p.preview));
  }

  function envelopeView(e) {
    return el('div', {},
      el('h4', {}, 'Envelope'),
      fields([
        ['task id', e.id],
        ['task', e.task],
        ['reply to', e.reply || 'nobody (no reply list)'],
        ['deadline', e.deadline_ms ? when(e.deadline_ms) : null],
        ['attempts', `${e.attempts} spent before this entry, ${e.max_attempts} allowed`],
        ['size', bytes(e.size)],
      ]),
      payloadView('Payload', e.payload));
  }

  async function loadTask(id) {
    $('task-id').value = id;
    const box = $('task-detail');
    if (!id) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.replaceChildren(el('p', { class: 'muted' }, `looking for ${id} in queue ${state.queue}…`));
    try {
      const t = await api(`${queuePath(state.queue)}/tasks/${encodeURIComponent(id)}`);
      box.replaceChildren(...taskView(t));
    } catch (e) {
      box.replaceChildren(el('p', { class: 'bad' }, `cannot look the task up: ${e.message}`));
    }
  }

  function taskView(t) {
    const out = [el('h3', {}, `Task ${t.id} in queue ${t.queue}`)];
    const s = t.state;
    let where;
    if (!s) {
      where = 'not found: it finished and its result was collected (results leave the broker then), or it was never submitted to this queue';
    } else if (s.kind === 'waiting') {
      where = `waiting in the ${s.priority} stream since ${s.queued_ms ? `${when(s.queued_ms)} (${ago(s.queued_ms)})` : '?'}`;
    } else if (s.kind === 'held') {
      where = `held by ${s.consumer} (running or about to), lease renewed ${span(s.idle_ms)} ago, delivery ${s.deliveries}; queued ${s.queued_ms ? when(s.queued_ms) : '?'} in the ${s.priority} stream`;
    } else if (s.kind === 'delayed') {
      where = `delayed: due ${when(s.due_ms)} (${s.due_ms > Date.now() ? `in ${span(s.due_ms - Date.now())}` : 'now'}), then to the ${s.priority} stream`;
    } else if (s.kind === 'dead') {
      where = `dead letter ${s.letter.letter}: ${s.letter.reason}`;
    } else {
      where = s.kind;
    }
    out.push(fields([
      ['state', where],
      ['attempts', t.attempts],
      ['cancelled', t.cancelled ? 'yes: its caller cancelled it (a tombstone exists)' : null],
      ['envelope', t.envelope_error],
      ['searched', `${t.searched} entries${t.complete ? '' : ' — the search stopped at its limit: the task may be further back'}`],
    ]));
    if (t.envelope) out.push(envelopeView(t.envelope));
    if (t.result) {
      const r = t.result;
      out.push(el('h4', {}, 'Result (waiting for its caller to collect it)'), fields([
        ['status', r.status],
        ['error', r.error],
        ['attempt', r.attempts],
        ['worker', r.worker],
        ['exit code', r.exit_code],
        ['signal', r.signal],
      ]));
      if (r.payload) out.push(payloadView('Value', r.payload));
    }
    return out;
  }

  // ---- delayed tasks ----------------------------------------------------------------------

  async function loadDelayed() {
    const queue = state.queue;
    if (queue === null) return;
    try {
      const page = await api(`${queuePath(queue)}/delayed?offset=${state.delayedOffset}&count=${PAGE}`);
      if (queue !== state.queue) return;
      $('delayed-summary').textContent = `${page.total} delayed task${page.total === 1 ? '' : 's'} in queue ${queue}, soonest first`;
      const rows = page.tasks.map((d) => {
        const e = d.envelope;
        return el('tr', {},
          el('td', {}, `${when(d.due_ms)} (${d.due_ms > Date.now() ? `in ${span(d.due_ms - Date.now())}` : 'due'})`),
          el('td', {}, orDash(d.priority)),
          el('td', { class: 'mono' }, e ? el('a', { href: `#task/${encodeURIComponent(e.id)}` }, e.id) : '–'),
          el('td', { class: 'mono' }, e ? e.task : d.envelope_error),
          el('td', { class: 'n' }, e ? `${e.attempts}/${e.max_attempts}` : '–'),
          el('td', { class: 'n' }, e ? bytes(e.size) : '–'),
          el('td', { class: 'reason mono', title: e ? e.payload.preview : '' }, e ? e.payload.preview : ''));
      });
      if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'no delayed tasks')));
      $('delayed-table').tBodies[0].replaceChildren(...rows);
      $('delayed-prev').disabled = state.delayedOffset === 0;
      $('delayed-next').disabled = state.delayedOffset + PAGE >= page.total;
    } catch (e) {
      notice(`cannot read the delayed tasks: ${e.message}`, true);
    }
  }

  // ---- schedules, rate limits, retries, chords -------------------------------------------------

  function relative(ms, now) {
    if (ms === null || ms === undefined) return '–';
    const d = ms - now;
    return `${when(ms)} (${d >= 0 ? `in ${span(d)}` : `${span(d)} ago`})`;
  }

  async function loadPlatform() {
    const queue = state.queue;
    if (queue === null) return;
    state.platformLoading = true;
    try {
      const p = await api(`${queuePath(queue)}/platform`);
      if (queue !== state.queue || state.view !== 'platform') return;
      const now = p.now_ms;
      $('platform-summary').textContent = `${p.schedules.length} schedule${p.schedules.length === 1 ? '' : 's'}, ${p.rate_limits.length} rate limit${p.rate_limits.length === 1 ? '' : 's'}, ${p.retries.length} task${p.retries.length === 1 ? '' : 's'} waiting for a retry, ${p.flows.length} chord${p.flows.length === 1 ? '' : 's'} or chain${p.flows.length === 1 ? '' : 's'} in queue ${queue}`;
      const schedules = p.schedules.map((s) => el('tr', {},
        el('td', { class: 'mono' }, s.name),
        el('td', { class: 'mono' }, s.timing),
        el('td', { class: 'mono' }, s.task),
        el('td', {}, s.queue),
        el('td', {}, s.catch_up),
        el('td', { class: s.enabled ? '' : 'warn' }, s.enabled ? 'yes' : 'no'),
        el('td', {}, s.last_id ? el('a', { href: `#task/${encodeURIComponent(s.last_id)}` }, relative(s.last_fired_ms, now)) : '–'),
        el('td', {}, relative(s.next_ms, now)),
        el('td', { class: 'n' }, s.fired),
        el('td', { class: 'n' }, s.skipped)));
      if (schedules.length === 0) schedules.push(el('tr', {}, el('td', { colspan: 10, class: 'muted' }, 'no schedules')));
      $('schedules-table').tBodies[0].replaceChildren(...schedules);
      const limits = p.rate_limits.map((l) => el('tr', {},
        el('td', { class: 'mono' }, l.task),
        el('td', {}, l.limit),
        el('td', {}, l.next_start_ms ? relative(l.next_start_ms, now) : 'no backlog')));
      if (limits.length === 0) limits.push(el('tr', {}, el('td', { colspan: 3, class: 'muted' }, 'no rate limits')));
      $('ratelimits-table').tBodies[0].replaceChildren(...limits);
      const retries = p.retries.map((r) => el('tr', {},
        el('td', { class: 'mono' }, el('a', { href: `#task/${encodeURIComponent(r.id)}` }, r.id)),
        el('td', { class: 'mono' }, r.task),
        el('td', { class: 'n' }, r.max_retries === null ? r.retries : `${r.retries}/${r.max_retries}`),
        el('td', {}, relative(r.due_ms, now)),
        el('td', { class: 'reason mono', title: orDash(r.last_error) }, orDash(r.last_error))));
      if (retries.length === 0) retries.push(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'no task waiting for a retry')));
      $('retries-table').tBodies[0].replaceChildren(...retries);
      $('retries-summary').textContent = p.delayed_read < p.delayed_total
        ? `Among the ${p.delayed_read} soonest of ${p.delayed_total} delayed tasks; a task out of retries is a dead letter.`
        : 'A task waiting for its retry is a delayed task; a task out of retries is a dead letter.';
      $('retries-queue').textContent = queue;
      const flows = p.flows.map((f) => el('tr', {},
        el('td', {}, f.kind),
        el('td', { class: 'mono' }, f.id),
        el('td', { class: 'n' }, `${f.done}/${f.total}`),
        el('td', { class: f.failed > 0 ? 'n warn' : 'n' }, f.failed_by === null ? f.failed : `${f.failed} (member ${f.failed_by + 1})`),
        el('td', { class: 'mono' }, el('a', { href: `#task/${encodeURIComponent(f.callback)}` }, f.callback)),
        el('td', { class: f.callback_state === 'failed' || f.callback_state === 'dead' ? 'warn' : '' }, f.callback_state),
        el('td', {}, f.fired_ms === null ? '–' : relative(f.fired_ms, now))));
      if (flows.length === 0) flows.push(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'no chord or chain running or recently ended')));
      $('flows-table').tBodies[0].replaceChildren(...flows);
      $('flows-summary').textContent = `Running first, then those that ended within their result TTL, latest first${p.flows_read < p.flows_total ? ` (among the ${p.flows_read} newest of ${p.flows_total} workflows)` : ''}. A chain's done counts its steps; its callback is its last step. Groups are not listed: read their tasks by id.`;
      $('flows-queue').textContent = queue;
    } catch (e) {
      notice(`cannot read the schedules, rate limits, retries and chords: ${e.message}`, true);
    } finally {
      state.platformLoading = false;
    }
  }

  // ---- views ------------------------------------------------------------------------------

  function show(view) {
    state.view = view;
    for (const section of document.querySelectorAll('main > section')) section.hidden = section.dataset.view !== view;
    for (const link of document.querySelectorAll('nav a')) link.classList.toggle('active', link.dataset.view === view);
    if (view === 'queues') renderQueues();
    if (view === 'workers') renderWorkers();
    if (view === 'dead') loadDead(state.dead.start);
    if (view === 'delayed') loadDelayed();
    if (view === 'platform') loadPlatform();
  }

  function route() {
    $('notice').hidden = true;
    $('dead-confirm').hidden = true;
    state.dead.pending = null;
    const hash = decodeURIComponent(location.hash.replace(/^#/, ''));
    if (hash.startsWith('task/')) {
      show('task');
      loadTask(hash.slice(5));
      return;
    }
    const views = ['queues', 'workers', 'dead', 'delayed', 'task', 'platform'];
    show(views.includes(hash) ? hash : 'queues');
  }

  function wire() {
    $('queue').addEventListener('change', (e) => pickQueue(e.target.value));
    $('workers-filter').addEventListener('input', () => {
      state.workersPage = 0;
      renderWorkers();
    });
    $('dead-newest').addEventListener('click', () => loadDead(null));
    $('dead-newer').addEventListener('click', () => {
      const page = state.dead.page;
      if (page && page.letters.length) loadDead({ after: page.letters[0].letter });
    });
    $('dead-older').addEventListener('click', () => {
      const page = state.dead.page;
      if (page && page.letters.length) loadDead({ before: page.letters[page.letters.length - 1].letter });
    });
    $('dead-requeue-all').addEventListener('click', () => {
      const total = state.dead.page ? state.dead.page.total : 0;
      confirmThen(`Requeue all ${total} dead letters of queue ${state.queue}? Each task runs again.`,
        () => act(`${queuePath(state.queue)}/dead/requeue-all`, 'requeue all'));
    });
    $('dead-discard-all').addEventListener('click', () => {
      const total = state.dead.page ? state.dead.page.total : 0;
      confirmThen(`Discard all ${total} dead letters of queue ${state.queue}? It cannot be undone.`,
        () => act(`${queuePath(state.queue)}/dead/discard-all`, 'discard all'));
    });
    $('dead-confirm-yes').addEventListener('click', () => {
      const action = state.dead.pending;
      state.dead.pending = null;
      if (action) action();
    });
    $('dead-confirm-no').addEventListener('click', () => {
      state.dead.pending = null;
      $('dead-confirm').hidden = true;
    });
    $('delayed-prev').addEventListener('click', () => {
      state.delayedOffset = Math.max(0, state.delayedOffset - PAGE);
      loadDelayed();
    });
    $('delayed-next').addEventListener('click', () => {
      state.delayedOffset += PAGE;
      loadDelayed();
    });
    $('task-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const id = $('task-id').value.trim();
      location.hash = `task/${encodeURIComponent(id)}`;
    });
    window.addEventListener('hashchange', route);
    window.addEventListener('resize', () => {
      if (state.view === 'queues') renderCharts();
    });
  }

  async function start() {
    try {
      state.config = await api('api/config');
      const history = await api('api/history');
      state.capacity = history.capacity;
      state.samples = history.samples;
      state.workers = history.workers;
      state.error = history.error;
    } catch (e) {
      const banner = $('error');
      banner.textContent = `cannot load the dashboard: ${e.message}`;
      banner.hidden = false;
      return;
    }
    $('broker').textContent = `${state.config.broker} · prefix ${state.config.prefix}`;
    if (state.config.read_only) {
      $('mode').hidden = false;
      document.body.classList.add('read-only');
    }
    wire();
    render();
    route();
    connect();
  }

  start();
})();
