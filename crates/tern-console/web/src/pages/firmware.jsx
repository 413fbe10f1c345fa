// Firmware: the catalogue of releases the broker offers registering devices
// (`/v1/admin/firmware`, for tokens of the whole broker): listed, added and deleted; and on a
// device's page, its version and the release the broker offers it.
import { useEffect, useState } from 'preact/hooks';
import { api, enc } from '../api.js';
import { offerText } from '../firmware.js';

const NEW_RELEASE = { id: '', platform: '', version: '', url: '', sha256: '', size: '', owner: '', tags: '', rollout_percent: '100' };
const FIELDS = [
  ['id', 'Id', 'fw-1.8.0'], ['platform', 'Platform', 'esp32'], ['version', 'Version', '1.8.0'],
  ['url', 'URL', 'https://…'], ['sha256', 'SHA-256', '64 hex digits'], ['size', 'Size (bytes)', ''],
  ['owner', 'Owner', 'all owners'], ['tags', 'Tags', 'comma-separated'], ['rollout_percent', 'Rollout %', '100'],
];

function releaseBody(form) {
  const body = {
    id: form.id.trim(), platform: form.platform.trim(), version: form.version.trim(),
    url: form.url.trim(), sha256: form.sha256.trim().toLowerCase(), size: Number(form.size),
    tags: form.tags.split(',').map((t) => t.trim()).filter(Boolean),
    rollout_percent: Number(form.rollout_percent),
  };
  if (form.owner.trim()) body.owner = form.owner.trim();
  return body;
}

export function Firmware() {
  const [releases, setReleases] = useState(null);
  const [form, setForm] = useState(NEW_RELEASE);
  const [status, setStatus] = useState('');
  const load = () => api('/v1/admin/firmware').then((a) => setReleases(a.releases)).catch((e) => {
    setReleases([]);
    setStatus(e.message);
  });
  useEffect(() => {
    load();
  }, []);
  const add = async (event) => {
    event.preventDefault();
    try {
      const added = await api('/v1/admin/firmware', { method: 'POST', body: releaseBody(form) });
      setStatus(`Added ${added.id}.`);
      setForm(NEW_RELEASE);
      load();
    } catch (e) {
      setStatus(e.message);
    }
  };
  const remove = async (id) => {
    if (!confirm(`Delete release ${id}? It is offered no more.`)) return;
    try {
      await api(`/v1/admin/firmware/${enc(id)}`, { method: 'DELETE' });
      setStatus(`Deleted ${id}.`);
      load();
    } catch (e) {
      setStatus(e.message);
    }
  };
  const set = (name) => (e) => {
    const value = e.currentTarget.value;
    setForm((f) => ({ ...f, [name]: value }));
  };
  return (
    <section aria-labelledby="firmware-title">
      <h1 id="firmware-title">Firmware</h1>
      <p role="status" data-testid="firmware-status">{status}</p>
      <div class="scroll">
        <table>
          <thead><tr><th scope="col">Release</th><th scope="col">Platform</th><th scope="col">Version</th><th scope="col">Owner</th><th scope="col">Tags</th><th scope="col">Rollout</th><th scope="col">URL</th><th scope="col">Size</th><th scope="col">SHA-256</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {(releases || []).map((r) => (
              <tr data-release={r.id}>
                <th scope="row">{r.id}</th><td>{r.platform}</td><td>{r.version}</td><td>{r.owner || 'all'}</td>
                <td>{(r.tags || []).join(', ')}</td><td>{r.rollout_percent}%</td>
                <td class="wrap"><a href={r.url} rel="noreferrer noopener">{r.url}</a></td><td>{r.size}</td>
                <td class="wrap"><code title={r.sha256}>{r.sha256.slice(0, 12)}…</code></td>
                <td><button type="button" class="danger" aria-label={`Delete ${r.id}`} onClick={() => remove(r.id)}>Delete</button></td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <p class="muted" data-testid="release-count">{releases ? `${releases.length} release(s)` : 'Loading…'}</p>
      <form onSubmit={add} aria-labelledby="release-add-title">
        <h2 id="release-add-title">Add a release</h2>
        <div class="row filters">
          {FIELDS.map(([name, label, hint]) => (
            <span><label for={`release-${name}`}>{label}</label>
              <input id={`release-${name}`} value={form[name]} onInput={set(name)} placeholder={hint}
                required={!['owner', 'tags'].includes(name)} /></span>
          ))}
        </div>
        <button type="submit">Add release</button>
      </form>
    </section>
  );
}

// A device's firmware version and the release the broker would offer it now (its own answer,
// in the device's view).
export function DeviceFirmware({ device }) {
  return <>{device.firmware || '–'} <span class="muted" data-testid="firmware-offer">{offerText(device.offer_status, device.offer)}</span></>;
}
