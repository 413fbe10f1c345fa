// Reads the Prometheus text of GET /metrics into {name: [{labels, value}]}.
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    // Label values are quoted and may hold braces (a route's `{*topic}`).
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2];
    }
    (out[match[1]] ||= []).push({ labels, value: Number(match[4]) });
  }
  return out;
}

// The sum of a metric over its labels (those matching `where`).
export function total(metrics, name, where = {}) {
  return (metrics[name] || [])
    .filter((s) => Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

// The broker's history samples ([{at, in, out}], oldest first) before a chart's series
// ([times, in, out]): those older than its first point, the last `max` points kept.
export function joinHistory(samples, series, max) {
  const first = series[0].length ? series[0][0] : Infinity;
  const older = samples.filter((s) => s.at < first);
  const join = (column, own) => [...older.map(column), ...own].slice(-max);
  return [join((s) => s.at, series[0]), join((s) => s.in, series[1]), join((s) => s.out, series[2])];
}

// Each MQTT listener's open connections, in the order scraped: [{protocol, address, open}].
export function listenersOf(metrics) {
  return (metrics.tern_listener_connections || []).map((s) => ({
    protocol: s.labels.protocol,
    address: s.labels.address,
    open: s.value,
  }));
}
