// The console's shell: login, the navigation, and the page of the location's hash.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { api, closeEvents, openEvents, whenLive, whenLoggedOut } from './api.js';
import { feedUnavailable, startFeed, stopFeed } from './feed.js';
import { Overview } from './pages/overview.jsx';
import { Topics } from './pages/topics.jsx';
import { Sessions } from './pages/sessions.jsx';
import { Access } from './pages/access.jsx';
import { Fleet, Device } from './pages/fleet.jsx';
import { Notifications } from './pages/notify.jsx';
import { Firmware } from './pages/firmware.jsx';

const PAGES = [
  ['overview', 'Overview'],
  ['topics', 'Topics'],
  ['sessions', 'Sessions'],
  ['access', 'Access requests'],
  ['fleet', 'Fleet'],
  ['notifications', 'Notifications'],
  ['firmware', 'Firmware'],
];

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return hash;
}

function Login({ onIn, failed }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(failed || '');
  const submit = async (event) => {
    event.preventDefault();
    try {
      await api('/v1/console/login', { method: 'POST', body: { token: token.trim() } });
      onIn();
    } catch (e) {
      setError(e.status === 401 ? 'That token is not valid.' : e.message);
    }
  };
  return (
    <main class="login">
      <h1>Tern</h1>
      <form onSubmit={submit}>
        <label for="token">Operator token</label>
        <input id="token" type="password" autocomplete="off" value={token}
          onInput={(e) => setToken(e.currentTarget.value)} placeholder="tot1.…" required />
        <button type="submit">Log in</button>
        {error && <p role="alert" class="error">{error}</p>}
      </form>
      <p class="hint">The token of <code>tern token add</code>, or the login link the broker logged at its first start.</p>
    </main>
  );
}

function Shell({ session, onOut }) {
  const hash = useHash();
  const [live, setLive] = useState(false);
  useEffect(() => whenLive(setLive), []);
  const [page, ...rest] = (hash.replace(/^#\/?/, '') || 'overview').split('/');
  useEffect(() => {
    openEvents();
    // A token without the metrics scope has no overview figures to gather.
    if (session.scopes.includes('metrics')) startFeed();
    else feedUnavailable('This token lacks the metrics scope: the overview has no figures.');
    return () => {
      stopFeed();
      closeEvents();
    };
  }, [session]);
  const logout = async () => {
    try {
      await api('/v1/console/logout', { method: 'POST' });
    } finally {
      onOut();
    }
  };
  let body;
  if (page === 'topics') body = <Topics topics={session.topics} />;
  else if (page === 'sessions') body = <Sessions />;
  else if (page === 'access') body = <Access />;
  else if (page === 'fleet' && rest.length) body = <Device udid={decodeURIComponent(rest.join('/'))} />;
  else if (page === 'fleet') body = <Fleet owner={session.owner} />;
  else if (page === 'notifications') body = <Notifications />;
  else if (page === 'firmware') body = <Firmware />;
  else body = <Overview />;
  return (
    <>
      <header>
        <span class="brand">Tern</span>
        <nav aria-label="Pages">
          {PAGES.filter(([id]) => !(id === 'firmware' && session.owner)).map(([id, title]) => (
            <a href={`#/${id}`} aria-current={page === id || (id === 'overview' && !PAGES.some(([p]) => p === page)) ? 'page' : undefined}>{title}</a>
          ))}
        </nav>
        <span class="live" role="status" data-testid="events-state">{live ? 'live' : 'connecting…'}</span>
        <span class="who">token <b>{session.id}</b>{session.owner && <> of owner <b data-testid="owner">{session.owner}</b></>}</span>
        <button type="button" class="quiet" onClick={logout}>Log out</button>
      </header>
      <main id="main">{body}</main>
    </>
  );
}

function App() {
  const [session, setSession] = useState(undefined);
  const [failed, setFailed] = useState('');
  const load = async () => {
    try {
      setSession(await api('/v1/console/session'));
    } catch {
      setSession(null);
    }
  };
  useEffect(() => {
    whenLoggedOut(() => setSession(null));
    const code = /^#login=([0-9a-f]+)$/.exec(location.hash);
    if (code) {
      history.replaceState(null, '', location.pathname);
      api('/v1/console/login', { method: 'POST', body: { code: code[1] } })
        .catch(() => setFailed('That login link was used already or is not valid.'))
        .finally(load);
    } else {
      load();
    }
  }, []);
  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null) return <Login onIn={load} failed={failed} />;
  return <Shell session={session} onOut={() => setSession(null)} />;
}

render(<App />, document.getElementById('app'));
