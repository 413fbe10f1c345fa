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

// One EventSource for the whole page: broker events and the messages of `filters`.
const listeners = new Set();
let source = null;
export function openEvents(filters) {
  closeEvents();
  const query = filters.map((f) => `filter=${enc(f)}`).join('&');
  source = new EventSource(`/v1/events?${query}`);
  for (const name of ['message', 'connected', 'disconnected', 'refused', 'access_request']) {
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

// A stream of its own, for the Topics page's "watch a filter".
export function watch(filter, callback) {
  const stream = new EventSource(`/v1/events?events=0&filter=${enc(filter)}`);
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
