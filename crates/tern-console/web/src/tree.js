// The topic tree: retained messages and live traffic, by level. Each node keeps its last
// message and a bounded series of its numeric values (for the sparkline).
const SERIES_MAX = 60;

export function newNode(name, path) {
  return { name, path, children: new Map(), message: null, series: [], count: 0 };
}

export function numberOf(text) {
  if (typeof text !== 'string' || text.trim() === '') return null;
  const n = Number(text);
  if (Number.isFinite(n)) return n;
  try {
    const value = JSON.parse(text);
    if (value && typeof value === 'object') {
      const first = Object.values(value).find((v) => typeof v === 'number');
      return first === undefined ? null : first;
    }
  } catch {
    /* not JSON */
  }
  return null;
}

export function insert(root, message, text) {
  let node = root;
  const levels = message.topic.split('/');
  levels.forEach((level, i) => {
    let child = node.children.get(level);
    if (!child) {
      child = newNode(level, levels.slice(0, i + 1).join('/'));
      node.children.set(level, child);
    }
    node = child;
    node.count += 1;
  });
  node.message = message;
  const n = numberOf(text);
  if (n !== null) {
    node.series.push(n);
    if (node.series.length > SERIES_MAX) node.series.shift();
  }
  return node;
}

export function find(root, path) {
  let node = root;
  for (const level of path.split('/')) {
    node = node && node.children.get(level);
  }
  return node || null;
}

export function pretty(text) {
  try {
    const value = JSON.parse(text);
    if (value !== null && typeof value === 'object') return JSON.stringify(value, null, 2);
  } catch {
    /* not JSON: shown as it is */
  }
  return text;
}
