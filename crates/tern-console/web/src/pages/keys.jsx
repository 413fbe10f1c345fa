// A device's HTTP key `d:<udid>` on its page (`/v1/admin/keys`, scope `keys`, within the
// token's realm): its active secrets, a new one made (shown once, with a copy button), one
// secret or the whole key revoked.
import { useEffect, useState } from 'preact/hooks';
import { api, enc } from '../api.js';

const when = (unix) => new Date(unix * 1000).toLocaleString();

export function DeviceKey({ udid }) {
  const id = `d:${udid}`;
  const [key, setKey] = useState(undefined);
  const [fresh, setFresh] = useState(null);
  const [status, setStatus] = useState('');
  const load = () => api('/v1/admin/keys').then((a) => setKey(a.keys.find((k) => k.id === id) || null)).catch((e) => {
    setKey(null);
    setStatus(e.status === 403 ? 'This token may not manage keys.' : e.message);
  });
  useEffect(() => {
    setFresh(null);
    load();
  }, [udid]);
  const rotate = async () => {
    try {
      setFresh(await api(`/v1/admin/keys/${enc(id)}/rotate`, { method: 'POST' }));
      setStatus('');
      load();
    } catch (e) {
      setStatus(e.message);
    }
  };
  const revoke = async (secret) => {
    const what = secret ? `secret ${secret} of ${id}` : `the key ${id}`;
    if (!confirm(`Revoke ${what}? Requests signed with it are refused from now on.`)) return;
    try {
      await api(`/v1/admin/keys/${enc(id)}${secret ? `?secret=${secret}` : ''}`, { method: 'DELETE' });
      setStatus(`Revoked ${what}.`);
      if (!secret) setFresh(null);
      load();
    } catch (e) {
      setStatus(e.message);
    }
  };
  const copy = () => navigator.clipboard.writeText(fresh.secret)
    .then(() => setStatus('Copied.'), () => setStatus('Copying was refused: select the secret instead.'));
  return (
    <section aria-labelledby="key-title">
      <h2 id="key-title">HTTP key <code>{id}</code></h2>
      <p role="status" data-testid="key-status">{status}</p>
      {key === null && !status && <p class="muted">This device has no key of its own (<code>tern key add {id}</code>).</p>}
      {key && (
        <ul data-testid="key-secrets">
          {key.secrets.map(([n, made]) => (
            <li data-secret={n}>secret {n}, made {when(made)}{' '}
              <button type="button" class="quiet" onClick={() => revoke(n)}>Revoke secret {n}</button></li>
          ))}
        </ul>
      )}
      {fresh && (
        <p class="row" data-testid="new-secret">
          <span>Secret {fresh.n} (shown this once): <code data-testid="secret">{fresh.secret}</code></span>
          <button type="button" class="quiet" onClick={copy}>Copy</button>
        </p>
      )}
      {key && (
        <div class="row">
          <button type="button" onClick={rotate}>Rotate key</button>
          <button type="button" class="danger" onClick={() => revoke(null)}>Revoke key</button>
        </div>
      )}
    </section>
  );
}
