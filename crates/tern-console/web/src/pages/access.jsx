// HTTP access requests: devices of app keys that need an operator's approval. Approve with
// grants of the device's own (none: the app key's), or reject; the list follows the events.
import { useEffect, useState } from 'preact/hooks';
import { api, enc, onEvent } from '../api.js';

const filters = (text) => text.split(/[\s,]+/).filter(Boolean);

function Request({ request, done }) {
  const [grants, setGrants] = useState({ publish: '', subscribe: '', both: '' });
  const [error, setError] = useState('');
  const set = (name) => (e) => setGrants({ ...grants, [name]: e.currentTarget.value });
  const id = `ar-${request.id}`;
  const decide = async (how) => {
    try {
      const body = how === 'approve'
        ? { publish: filters(grants.publish), subscribe: filters(grants.subscribe), both: filters(grants.both) }
        : undefined;
      await api(`/v1/admin/access-requests/${enc(request.id)}/${how}`, { method: 'POST', body: body || {} });
      done();
    } catch (e) {
      setError(e.message);
    }
  };
  return (
    <li class="card" data-client={request.client_id} aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>{request.client_id} <span class={`state ${request.state}`}>{request.state}</span></h2>
      <p class="meta">key {request.key} · {request.requests} request(s) · from {request.peer} · last {new Date(request.last_seen * 1000).toLocaleString()}</p>
      <div class="grants">
        <label for={`${id}-pub`}>May publish to</label>
        <input id={`${id}-pub`} value={grants.publish} onInput={set('publish')} placeholder="fleet/%c/#" />
        <label for={`${id}-sub`}>May subscribe to</label>
        <input id={`${id}-sub`} value={grants.subscribe} onInput={set('subscribe')} />
        <label for={`${id}-both`}>Both</label>
        <input id={`${id}-both`} value={grants.both} onInput={set('both')} />
      </div>
      <button type="button" onClick={() => decide('approve')}>Approve</button>
      {request.state === 'pending' && <button type="button" class="danger" onClick={() => decide('reject')}>Reject</button>}
      {error && <p role="alert" class="error">{error}</p>}
    </li>
  );
}

export function Access() {
  const [requests, setRequests] = useState(null);
  const [error, setError] = useState('');
  const load = () => api('/v1/admin/access-requests').then((a) => setRequests(a.access_requests)).catch((e) => setError(e.message));
  useEffect(() => {
    load();
    return onEvent((name) => name === 'access_request' && load());
  }, []);
  return (
    <section aria-labelledby="access-title">
      <h1 id="access-title">HTTP access requests</h1>
      {error && <p role="alert" class="error">{error}</p>}
      {requests && requests.length === 0 && <p class="muted">No requests waiting.</p>}
      <ul class="cards">{(requests || []).map((r) => <Request key={r.id} request={r} done={load} />)}</ul>
    </section>
  );
}
