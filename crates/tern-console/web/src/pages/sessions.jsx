// Sessions and clients: every session in the token's realm (refreshed as clients connect and
// leave), one session's subscriptions, queue, in-flight messages and dead letters; kick a
// client, delete a session.
import { useEffect, useState } from 'preact/hooks';
import { api, enc, onEvent, payloadText } from '../api.js';

// An identity is worded `method:name`; a fleet name separates its parts with control
// characters, shown as `/`.

function Messages({ title, list }) {
  return (
    <>
      <h3>{title} ({list.length})</h3>
      {list.length > 0 && <ol class="messages">{list.map((m) => <li><b>{m.topic}</b> <code>{payloadText(m)}</code> QoS {m.qos}</li>)}</ol>}
    </>
  );
}

function Inspect({ id, close }) {
  const [detail, setDetail] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    api(`/v1/admin/sessions/${enc(id)}`).then(setDetail).catch((e) => setError(e.message));
  }, [id]);
  return (
    <div class="detail" role="region" aria-label={`Session ${id}`}>
      <h2>Session {id}</h2>
      <button type="button" class="quiet" onClick={close}>Close</button>
      {error && <p role="alert" class="error">{error}</p>}
      {detail && (
        <>
          <h3>Subscriptions</h3>
          {detail.subscription_list.length === 0 ? <p class="muted">None.</p>
            : <ul>{detail.subscription_list.map((s) => <li><code>{s.filter}</code> QoS {s.qos}</li>)}</ul>}
          <Messages title="Queued" list={detail.queue} />
          <Messages title="In flight" list={detail.inflight_messages} />
          <Messages title="Dead letters" list={detail.dead_letters} />
        </>
      )}
    </div>
  );
}

export function Sessions() {
  const [sessions, setSessions] = useState([]);
  const [inspected, setInspected] = useState('');
  const [status, setStatus] = useState('');
  const load = () => api('/v1/admin/sessions').then((a) => setSessions(a.sessions)).catch((e) => setStatus(e.message));
  useEffect(() => {
    load();
    return onEvent((name) => (name === 'connected' || name === 'disconnected') && load());
  }, []);
  const act = async (what, path, id) => {
    if (!confirm(`${what} ${id}?`)) return;
    try {
      await api(path, { method: 'DELETE' });
      setStatus(`${what}: ${id}`);
      load();
    } catch (e) {
      setStatus(e.message);
    }
  };
  return (
    <section aria-labelledby="sessions-title">
      <h1 id="sessions-title">Sessions and clients</h1>
      <p role="status">{status}</p>
      <div class="scroll">
        <table>
          <thead><tr><th scope="col">Client</th><th scope="col">State</th><th scope="col">Owner</th><th scope="col">MQTT</th><th scope="col">Subs</th><th scope="col">Queued</th><th scope="col">In flight</th><th scope="col">Dead</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
          <tbody>
            {sessions.map((s) => (
              <tr data-client={s.client_id}>
                <th scope="row">{s.client_id}</th>
                <td class={s.connected ? 'online' : 'offline'}>{s.connected ? 'connected' : 'away'}</td>
                <td data-testid="owner">{s.owner || '–'}</td>
                <td>{s.protocol === 5 ? '5' : s.protocol === 4 ? '3.1.1' : '3.1'}</td>
                <td>{s.subscriptions}</td><td>{s.queued}</td><td>{s.inflight}</td><td>{s.dead}</td>
                <td class="actions">
                  <button type="button" onClick={() => setInspected(s.client_id)}>Inspect</button>
                  {s.connected && <button type="button" onClick={() => act('Kick', `/v1/admin/clients/${enc(s.client_id)}`, s.client_id)}>Kick</button>}
                  <button type="button" class="danger" onClick={() => act('Delete session', `/v1/admin/sessions/${enc(s.client_id)}`, s.client_id)}>Delete</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {sessions.length === 0 && <p class="muted">No sessions.</p>}
      {inspected && <Inspect id={inspected} close={() => setInspected('')} />}
    </section>
  );
}
