// The notifications' pure parts: one list kept up to date from the listing and the event
// stream, and an answer read from what the operator typed or chose.

export const keyOf = (n) => `${n.owner}/${n.udid}/${n.nid}`;

// `list` with `change` (a listed notification or a `notification` event) merged in. Changes
// only go forward (pending to finished, undelivered to delivered), so an event older than the
// listing it meets changes nothing; an event carries `delivered` as a flag and no times, so
// what the list knew is kept where the event says less.
export function merge(list, change) {
  const key = keyOf(change);
  const { change: _word, expires_in: _left, ...fields } = change;
  const at = list.findIndex((n) => keyOf(n) === key);
  if (at < 0) return [...list, fields];
  const known = list[at];
  if (known.state !== 'pending' && fields.state === 'pending') return list;
  const delivered = typeof known.delivered === 'number' ? known.delivered : fields.delivered || known.delivered || false;
  const next = [...list];
  next[at] = { ...known, ...fields, delivered };
  return next;
}

// A page of the listing read newest first (`page`), older than all of `list` (kept oldest
// first, as events append to it): the two joined, oldest first.
export function olderPage(page, list) {
  return list.reduce(merge, [...page].reverse());
}

// Whether `n` is shown under the filter `state` (`all` or a state).
export const shownIn = (n, state) => state === 'all' || n.state === state;

// A notification's delivery as words: what the device was owed (the answer to its question,
// or the operator's question) and whether it acknowledged it.
export function deliveryOf(n) {
  if (n.direction === 'from_device' && n.state !== 'answered') return '';
  return n.delivered ? 'delivered' : 'not delivered yet';
}
