// How the console talks to the broker: the operator API with the session cookie (sent by the
// browser; the server checks the Origin of every change), and one shared event stream.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

let onLoggedOut = () => {};
export function whenLoggedOut(callback) {
  onLoggedOut = callback;
}

export async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { text };
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 && !path.startsWith('/v1/console/login')) onLoggedOut();
    throw new ApiError(response.status, error.code || 'error', error.message || response.statusText);
  }
  return data;
}

export const enc = (text) => encodeURIComponent(text);

// One EventSource for the whole page, of broker events only: messages come on streams of
// their own, opened by the page that shows them and only while it does (a console left open
// on another page costs the broker no copy of its traffic).
const listeners = new Set();
let source = null;

// Calls `ready(true)` once a stream's watcher is in place on the broker thread, `ready(false)`
// while it reconnects. The broker says so on the stream itself: its first event, `ready`, is
// sent by the broker thread once the watcher is there, so nothing after it is missed (the
// stream's opening says only that the request was answered).
function whenWatching(stream, ready) {
  stream.addEventListener('ready', () => ready(true));
  stream.onerror = () => ready(false);
}

let onLive = () => {};
export function whenLive(callback) {
  onLive = callback;
}

export function openEvents() {
  closeEvents();
  source = new EventSource('/v1/events');
  whenWatching(source, (live) => onLive(live));
  for (const name of ['connected', 'disconnected', 'refused', 'access_request', 'notification', 'fleet']) {
    source.addEventListener(name, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const listener of listeners) listener(name, data);
    });
  }
}
export function closeEvents() {
  if (source) source.close();
  source = null;
}
export function onEvent(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// A stream of the messages of `filters` (at most 16), for as long as the caller keeps it;
// `ready(live)` says when it is watching (see whenWatching).
export function watch(filters, callback, ready = () => {}) {
  const query = [].concat(filters).map((f) => `filter=${enc(f)}`).join('&');
  const stream = new EventSource(`/v1/events?events=0&${query}`);
  whenWatching(stream, ready);
  stream.addEventListener('message', (event) => {
    try {
      callback(JSON.parse(event.data));
    } catch {
      /* a frame that is not JSON is not a message */
    }
  });
  return () => stream.close();
}

// A message's payload as text (binary shown as base64).
export function payloadText(message) {
  if (typeof message.payload === 'string') return message.payload;
  if (typeof message.payload_b64 === 'string') return `base64:${message.payload_b64}`;
  return '';
}
