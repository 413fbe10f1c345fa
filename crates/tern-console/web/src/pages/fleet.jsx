// Fleet: the registry's devices with their live state (connected and disconnected events
// change it without a reload), a filter, and one device's page.
import { useEffect, useState } from 'preact/hooks';
import { api, enc, onEvent } from '../api.js';
import { DeviceNotifications } from './notify.jsx';

function useLive(initial) {
  const [online, setOnline] = useState(initial);
  useEffect(() => onEvent((name, data) => {
    if (name === 'connected' || name === 'disconnected') {
      setOnline((o) => ({ ...o, [data.client_id]: name === 'connected' }));
    }
  }), []);
  return [online, setOnline];
}

const matches = (device, text) => !text || [device.owner, device.udid, device.alias, device.platform, device.firmware, ...(device.tags || [])]
  .some((field) => field && String(field).toLowerCase().includes(text.toLowerCase()));

export function Fleet() {
  const [devices, setDevices] = useState(null);
  const [error, setError] = useState('');
  const [text, setText] = useState('');
  const [state, setState] = useState('all');
  const [online, setOnline] = useLive({});
  useEffect(() => {
    api('/v1/admin/devices').then((a) => {
      setDevices(a.devices);
      setOnline((o) => Object.fromEntries(a.devices.map((d) => [d.udid, o[d.udid] ?? d.connected])));
    }).catch((e) => setError(e.message));
  }, []);
  const shown = (devices || []).filter((d) => matches(d, text) && (state === 'all' || (state === 'online') === Boolean(online[d.udid])));
  return (
    <section aria-labelledby="fleet-title">
      <h1 id="fleet-title">Fleet</h1>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="row">
        <label for="fleet-filter">Filter</label>
        <input id="fleet-filter" type="search" value={text} onInput={(e) => setText(e.currentTarget.value)} placeholder="owner, udid, platform, firmware, tag" />
        <label for="fleet-state">State</label>
        <select id="fleet-state" value={state} onChange={(e) => setState(e.currentTarget.value)}>
          <option value="all">all</option><option value="online">online</option><option value="offline">offline</option>
        </select>
      </div>
      <p class="muted">{devices ? `${shown.length} of ${devices.length} device(s)` : 'Loading…'}</p>
      <div class="scroll">
        <table>
          <thead><tr><th scope="col">Device</th><th scope="col">State</th><th scope="col">Owner</th><th scope="col">Alias</th><th scope="col">Platform</th><th scope="col">Firmware</th><th scope="col">Tags</th></tr></thead>
          <tbody>
            {shown.slice(0, 500).map((d) => (
              <tr data-udid={d.udid}>
                <th scope="row"><a href={`#/fleet/${enc(d.udid)}`}>{d.udid}</a></th>
                <td data-testid="state" class={online[d.udid] ? 'online' : 'offline'}>{d.disabled ? 'disabled' : online[d.udid] ? 'online' : 'offline'}</td>
                <td>{d.owner}</td><td>{d.alias}</td><td>{d.platform}</td><td>{d.firmware}</td><td>{(d.tags || []).join(', ')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {shown.length > 500 && <p class="muted">The first 500 are shown: narrow the filter.</p>}
    </section>
  );
}

export function Device({ udid }) {
  const [device, setDevice] = useState(null);
  const [session, setSession] = useState(null);
  const [status, setStatus] = useState('');
  const [online, setOnline] = useLive({});
  const load = () => {
    api(`/v1/admin/devices/${enc(udid)}`).then((d) => {
      setDevice(d);
      setOnline((o) => ({ ...o, [d.udid]: o[d.udid] ?? d.connected }));
    }).catch((e) => setStatus(e.message));
    api(`/v1/admin/sessions/${enc(udid)}`).then(setSession).catch(() => setSession(null));
  };
  useEffect(load, [udid]);
  const change = async (method, body, what) => {
    try {
      await api(`/v1/admin/devices/${enc(udid)}`, { method, body });
      setStatus(what);
      if (method === 'DELETE') location.hash = '#/fleet'; else load();
    } catch (e) {
      setStatus(e.message);
    }
  };
  return (
    <section aria-labelledby="device-title">
      <p><a href="#/fleet">← Fleet</a></p>
      <h1 id="device-title">{udid} <span data-testid="state" class={online[udid] ? 'online' : 'offline'}>{online[udid] ? 'online' : 'offline'}</span></h1>
      <p role="status">{status}</p>
      {device && (
        <dl class="facts">
          <dt>Owner</dt><dd>{device.owner}</dd>
          <dt>Alias</dt><dd>{device.alias || '–'}</dd>
          <dt>Platform</dt><dd>{device.platform || '–'}</dd>
          <dt>Firmware</dt><dd>{device.firmware || '–'}</dd>
          <dt>Tags</dt><dd>{(device.tags || []).join(', ') || '–'}</dd>
          <dt>Credential</dt><dd>{device.credential}</dd>
          <dt>Registered</dt><dd>{device.created ? new Date(device.created * 1000).toLocaleString() : '–'}</dd>
          <dt>Disabled</dt><dd>{device.disabled ? 'yes' : 'no'}</dd>
        </dl>
      )}
      {session && (
        <p>Session: {session.subscription_list.length} subscription(s), {session.queue.length} queued, {session.inflight_messages.length} in flight, {session.dead_letters.length} dead.</p>
      )}
      {device && (
        <div class="row">
          <button type="button" onClick={() => change('PATCH', { disabled: !device.disabled }, device.disabled ? 'Enabled.' : 'Disabled.')}>{device.disabled ? 'Enable' : 'Disable'}</button>
          <button type="button" class="danger" onClick={() => confirm(`Delete ${udid} with its session?`) && change('DELETE', undefined, 'Deleted.')}>Delete</button>
        </div>
      )}
      {device && <DeviceNotifications udid={udid} />}
    </section>
  );
}
