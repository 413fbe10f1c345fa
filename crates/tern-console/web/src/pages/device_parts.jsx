// Parts of a device's page: its MQTT password changed, and its recent messages (when the
// broker's device view has them).
import { useState } from 'preact/hooks';
import { api, enc } from '../api.js';
import { messageText } from '../device.js';
import { pretty } from '../tree.js';

const when = (secs) => new Date(secs * 1000).toLocaleString();

// A new MQTT password for a device that logs in with one: the broker hashes it (argon2id);
// its next CONNECT needs it.
export function DevicePassword({ udid }) {
  const [password, setPassword] = useState('');
  const [status, setStatus] = useState('');
  const submit = async (event) => {
    event.preventDefault();
    try {
      await api(`/v1/admin/devices/${enc(udid)}`, { method: 'PATCH', body: { password } });
      setPassword('');
      setStatus('Password changed: the device needs it at its next connection.');
    } catch (e) {
      setStatus(`Refused: ${e.message}`);
    }
  };
  return (
    <form class="row" onSubmit={submit} aria-labelledby="password-title">
      <h2 id="password-title">MQTT password</h2>
      <label for="device-password">New password</label>
      <input id="device-password" type="password" autocomplete="new-password" value={password}
        onInput={(e) => setPassword(e.currentTarget.value)} required />
      <button type="submit">Change password</button>
      <p role="status" data-testid="password-status">{status}</p>
    </form>
  );
}

// The device's last messages, newest first, each pretty-printed when it is JSON.
export function RecentMessages({ messages }) {
  if (!Array.isArray(messages)) return null;
  return (
    <section aria-labelledby="recent-title">
      <h2 id="recent-title">Recent messages</h2>
      {messages.length === 0 ? <p class="muted">None kept.</p> : (
        <ol class="cards" data-testid="recent-messages">
          {[...messages].reverse().map((m) => (
            <li class="card">
              <p class="meta"><b>{m.topic}</b> · {when(m.at)} · QoS {m.qos}{m.retain ? ' · retained' : ''}</p>
              <pre>{pretty(messageText(m))}</pre>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
