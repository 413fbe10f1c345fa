// The overview's figures, gathered for as long as the console is open (not only while the
// overview is shown): GET /metrics every two seconds, and the connections refused, from the
// event stream. Its chart opens with the broker's own history of the last hour
// (GET /metrics/history), which the points of this tab then follow.
import { api, onEvent } from './api.js';
import { joinHistory, listenersOf, parseMetrics, total } from './metrics.js';

const EVERY_MS = 2000;
const POINTS_MAX = 1800; // an hour at one point every two seconds
const REFUSED_MAX = 50;

const state = { figures: null, error: '', series: [[], [], []], refused: [], last: null };
const watchers = new Set();
let timer = null;
let offEvents = null;

function changed() {
  for (const watcher of watchers) watcher(state);
}

function figuresOf(m, previous, now) {
  const received = total(m, 'tern_messages_received_total');
  const sent = total(m, 'tern_messages_sent_total');
  const commits = total(m, 'tern_store_commit_seconds_count');
  const commitSeconds = total(m, 'tern_store_commit_seconds_sum');
  const f = {
    connections: total(m, 'tern_connections'),
    sessions: total(m, 'tern_sessions'),
    subscriptions: total(m, 'tern_subscriptions'),
    queued: total(m, 'tern_queue_messages', { state: 'queued' }),
    inflight: total(m, 'tern_queue_messages', { state: 'inflight' }),
    dead: total(m, 'tern_queue_messages', { state: 'dead' }),
    retained: total(m, 'tern_retained_messages'),
    held: total(m, 'tern_held_bytes'),
    dropped: total(m, 'tern_messages_dropped_total'),
    // Absent where the broker cannot read it (no /proc).
    resident: m.process_resident_memory_bytes ? total(m, 'process_resident_memory_bytes') : null,
    listeners: listenersOf(m),
    rateIn: 0,
    rateOut: 0,
    commitMs: previous ? previous.commitMs : null,
  };
  if (previous) {
    const dt = Math.max(0.001, now - previous.now);
    f.rateIn = (received - previous.received) / dt;
    f.rateOut = (sent - previous.sent) / dt;
    const n = commits - previous.commits;
    if (n > 0) f.commitMs = ((commitSeconds - previous.commitSeconds) / n) * 1000;
  }
  return [f, { now, received, sent, commits, commitSeconds, commitMs: f.commitMs }];
}

async function tick() {
  try {
    const response = await fetch('/metrics', { credentials: 'same-origin' });
    if (!response.ok) throw new Error(`metrics: ${response.status} ${response.statusText}`);
    const now = Date.now() / 1000;
    const previous = state.last;
    const [figures, last] = figuresOf(parseMetrics(await response.text()), previous, now);
    if (previous) {
      const keep = (xs, x) => [...xs, x].slice(-POINTS_MAX);
      const [t, a, b] = state.series;
      state.series = [keep(t, now), keep(a, figures.rateIn), keep(b, figures.rateOut)];
    }
    Object.assign(state, { figures, last, error: '' });
  } catch (error) {
    state.error = error.message;
  }
  changed();
}

async function loadHistory(started) {
  try {
    const history = await api('/metrics/history');
    // A feed stopped or started again since has no use for it.
    if (started !== generation) return;
    state.series = joinHistory(history.samples || [], state.series, POINTS_MAX);
    changed();
  } catch {
    /* without it the chart starts from now, as it fills */
  }
}

let generation = 0;

export function startFeed() {
  stopFeed();
  generation += 1;
  Object.assign(state, { figures: null, error: '', series: [[], [], []], refused: [], last: null });
  loadHistory(generation);
  tick();
  timer = setInterval(tick, EVERY_MS);
  offEvents = onEvent((name, data) => {
    if (name === 'refused') {
      state.refused = [{ at: new Date(), ...data }, ...state.refused].slice(0, REFUSED_MAX);
      changed();
    }
  });
}

export function stopFeed() {
  generation += 1;
  if (timer) clearInterval(timer);
  if (offEvents) offEvents();
  timer = null;
  offEvents = null;
}

export function watchFeed(watcher) {
  watchers.add(watcher);
  watcher(state);
  return () => watchers.delete(watcher);
}

// Says why there are no figures (a token without the metrics scope).
export function feedUnavailable(reason) {
  stopFeed();
  Object.assign(state, { figures: null, error: reason, series: [[], [], []], refused: [], last: null });
  changed();
}
