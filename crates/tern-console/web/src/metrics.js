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

// Each MQTT listener's open connections, in the order scraped: [{protocol, address, open}].
export function listenersOf(metrics) {
  return (metrics.tern_listener_connections || []).map((s) => ({
    protocol: s.labels.protocol,
    address: s.labels.address,
    open: s.value,
  }));
}
