// Fleet: the registry's devices the session's token may see (`/v1/fleet/devices`, filtered
// and paged by the server) with their live state (connected and disconnected events, and the
// fleet's online and offline, change it without a reload) and the list read again when a
// device is added, changed or deleted elsewhere; and one device's page
// (`/v1/fleet/devices/{udid}`).
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, enc, onEvent } from '../api.js';
import { appendPage, devicesQuery, LISTING_CHANGES, refreshLimit } from '../fleet.js';
import { DeviceNotifications } from './notify.jsx';
import { DeviceFirmware } from './firmware.jsx';
import { DeviceKey } from './keys.jsx';
import { DevicePassword, RecentMessages } from './device_parts.jsx';

function useLive(initial) {
  const [online, setOnline] = useState(initial);
  useEffect(() => onEvent((name, data) => {
    if (name === 'connected' || name === 'disconnected') {
      setOnline((o) => ({ ...o, [data.client_id]: name === 'connected' }));
    } else if (name === 'fleet' && (data.change === 'online' || data.change === 'offline')) {
      setOnline((o) => ({ ...o, [data.udid]: data.change === 'online' }));
    }
  }), []);
  return [online, setOnline];
}

const when = (unix) => (unix ? new Date(unix * 1000).toLocaleString() : '–');

// The form's filters; the server applies them, a page of PAGE at a time.
const PAGE = 100;
const NO_FILTER = { owner: '', online: '', platform: '', firmware: '', tag: '', q: '' };
const TEXT_FILTERS = [
  ['q', 'Search', 'udid or alias'], ['owner', 'Owner', ''], ['platform', 'Platform', ''],
  ['firmware', 'Firmware', 'version'], ['tag', 'Tag', ''],
];

// `owner`: the session's token's owner, if it is an owner's (it sees that fleet only, so it
// is offered no filter by owner).
export function Fleet({ owner }) {
  const [filters, setFilters] = useState(NO_FILTER);
  const [devices, setDevices] = useState(null);
  const [next, setNext] = useState(null);
  const [error, setError] = useState('');
  const [online, setOnline] = useLive({});
  // Only the answer to the latest question is drawn: one to a filter since changed is not.
  const asked = useRef(0);
  const load = (cursor, limit = PAGE) => {
    const mine = ++asked.current;
    return api(`/v1/fleet/devices${devicesQuery(filters, cursor, limit)}`).then((a) => {
      if (mine !== asked.current) return;
      setError('');
      setDevices((d) => (cursor ? appendPage(d || [], a.devices) : a.devices));
      setNext(a.next);
      setOnline((o) => ({ ...o, ...Object.fromEntries(a.devices.map((d) => [d.udid, o[d.udid] ?? d.connected])) }));
    }).catch((e) => {
      if (mine !== asked.current) return;
      // A refused filter lists nothing rather than the last answer to another one.
      setError(e.message);
      setDevices([]);
      setNext(null);
    });
  };
  useEffect(() => {
    load(null);
  }, [filters]);
  // A device added, changed or deleted elsewhere: the pages shown are asked for again (the
  // server alone knows whether it passes the filters). One question at a time: changes that
  // come while one is on its way make one more.
  const latest = useRef({ load, shown: 0 });
  latest.current = { load, shown: (devices || []).length };
  const refreshing = useRef(null);
  useEffect(() => {
    const refresh = () => {
      if (refreshing.current) {
        refreshing.current = 'again';
        return;
      }
      refreshing.current = 'running';
      const { load: loadNow, shown } = latest.current;
      loadNow(null, refreshLimit(shown, PAGE)).finally(() => {
        const again = refreshing.current === 'again';
        refreshing.current = null;
        if (again) refresh();
      });
    };
    return onEvent((name, data) => {
      if (name === 'fleet' && LISTING_CHANGES.has(data.change)) refresh();
    });
  }, []);
  const set = (name) => (e) => {
    const value = e.currentTarget.value;
    setFilters((f) => ({ ...f, [name]: value }));
  };
  const shown = devices || [];
  return (
    <section aria-labelledby="fleet-title">
      <h1 id="fleet-title">Fleet</h1>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="row filters">
        {TEXT_FILTERS.filter(([name]) => !(owner && name === 'owner')).map(([name, label, hint]) => (
          <span><label for={`fleet-${name}`}>{label}</label>
            <input id={`fleet-${name}`} type="search" value={filters[name]} onInput={set(name)} placeholder={hint} /></span>
        ))}
        <span><label for="fleet-state">State</label>
          <select id="fleet-state" value={filters.online} onChange={set('online')}>
            <option value="">all</option><option value="1">online</option><option value="0">offline</option>
          </select></span>
      </div>
      <p class="muted" data-testid="fleet-count">{devices ? `${shown.length} device(s)${next ? ', more to list' : ''}` : 'Loading…'}</p>
      <div class="scroll">
        <table>
          <thead><tr><th scope="col">Device</th><th scope="col">State</th><th scope="col">Owner</th><th scope="col">Alias</th><th scope="col">Platform</th><th scope="col">Firmware</th><th scope="col">Tags</th><th scope="col">Last seen</th></tr></thead>
          <tbody>
            {shown.map((d) => (
              <tr data-udid={d.udid}>
                <th scope="row"><a href={`#/fleet/${enc(d.udid)}`}>{d.udid}</a></th>
                <td data-testid="state" class={online[d.udid] ? 'online' : 'offline'}>{d.disabled ? 'disabled' : online[d.udid] ? 'online' : 'offline'}</td>
                <td>{d.owner}</td><td>{d.alias}</td><td>{d.platform}</td><td>{d.firmware}</td><td>{(d.tags || []).join(', ')}</td>
                <td>{d.status ? when(d.status.last_seen) : 'never'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {next && <button type="button" class="quiet" onClick={() => load(next)}>More</button>}
    </section>
  );
}

export function Device({ udid }) {
  const [device, setDevice] = useState(null);
  const [status, setStatus] = useState('');
  const [online, setOnline] = useLive({});
  const load = () => {
    api(`/v1/fleet/devices/${enc(udid)}`).then((d) => {
      setDevice(d);
      setOnline((o) => ({ ...o, [d.udid]: o[d.udid] ?? d.connected }));
    }).catch((e) => {
      setDevice(null);
      setStatus(e.message);
    });
  };
  // Another device's page shows nothing of the one before while its own is on its way.
  useEffect(() => {
    setDevice(null);
    setStatus('');
    load();
  }, [udid]);
  // Its history, last seen and session change as it comes and goes: read again then.
  useEffect(() => onEvent((name, data) => {
    if ((name === 'connected' || name === 'disconnected') && data.client_id === udid) load();
    if (name === 'fleet' && data.udid === udid && LISTING_CHANGES.has(data.change)) load();
  }), [udid]);
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
      <h1 id="device-title">{udid} {device && <span data-testid="state" class={online[udid] ? 'online' : 'offline'}>{online[udid] ? 'online' : 'offline'}</span>}</h1>
      <p role="status">{status}</p>
      {device && (
        <dl class="facts">
          <dt>Owner</dt><dd>{device.owner}</dd>
          <dt>Alias</dt><dd>{device.alias || '–'}</dd>
          <dt>Platform</dt><dd>{device.platform || '–'}</dd>
          <dt>Firmware</dt><dd data-testid="firmware"><DeviceFirmware device={device} /></dd>
          <dt>Tags</dt><dd>{(device.tags || []).join(', ') || '–'}</dd>
          <dt>Credential</dt><dd data-testid="credential">{device.credential}</dd>
          <dt>Registered</dt><dd>{when(device.created)}</dd>
          <dt>Disabled</dt><dd>{device.disabled ? 'yes' : 'no'}</dd>
          <dt>Last seen</dt><dd data-testid="last-seen">{device.status ? when(device.status.last_seen) : 'never'}</dd>
          <dt>Last seen over HTTP</dt><dd>{device.status?.last_seen_http ? when(device.status.last_seen_http) : 'never'}</dd>
          <dt>Messages</dt><dd data-testid="messages">{device.status ? `${device.status.messages_in} in, ${device.status.messages_out} out` : '–'}</dd>
          <dt>Session</dt><dd data-testid="session">{device.session
            ? `${device.session.connected ? 'connected' : 'away'}, ${device.session.subscriptions} subscription(s), ${device.session.queued} queued, ${device.session.inflight} in flight, ${device.session.dead} dead`
            : 'none'}</dd>
        </dl>
      )}
      {device && (
        <section aria-labelledby="history-title">
          <h2 id="history-title">Status history</h2>
          {device.history.length === 0 ? <p class="muted">No change since the broker started.</p> : (
            <ol class="history" data-testid="history">
              {[...device.history].reverse().map((h) => (
                <li><span class={h.online ? 'online' : 'offline'}>{h.online ? 'online' : 'offline'}</span> {when(h.at)}</li>
              ))}
            </ol>
          )}
        </section>
      )}
      {device && (
        <div class="row">
          <button type="button" onClick={() => change('PATCH', { disabled: !device.disabled }, device.disabled ? 'Enabled.' : 'Disabled.')}>{device.disabled ? 'Enable' : 'Disable'}</button>
          <button type="button" class="danger" onClick={() => confirm(`Delete ${udid} with its session?`) && change('DELETE', undefined, 'Deleted.')}>Delete</button>
        </div>
      )}
      {device && <RecentMessages messages={device.recent_messages} />}
      {device && device.credential === 'password' && <DevicePassword udid={udid} />}
      {device && <DeviceNotifications udid={udid} />}
      {device && <DeviceKey udid={udid} />}
    </section>
  );
}
