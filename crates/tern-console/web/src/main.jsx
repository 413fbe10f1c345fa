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

// How one logs in: the fields each way asks for.
const LOGINS = {
  token: 'Operator token',
  user: 'User and password',
  jwt: 'JWT of an identity provider',
};

function Login({ onIn, failed }) {
  const [way, setWay] = useState('token');
  const [fields, setFields] = useState({ token: '', user: '', password: '', jwt: '' });
  const [error, setError] = useState(failed || '');
  const field = (name) => ({
    value: fields[name],
    onInput: (e) => setFields({ ...fields, [name]: e.currentTarget.value }),
  });
  const submit = async (event) => {
    event.preventDefault();
    const body = way === 'user' ? { user: fields.user.trim(), password: fields.password }
      : way === 'jwt' ? { jwt: fields.jwt.trim() } : { token: fields.token.trim() };
    try {
      await api('/v1/console/login', { method: 'POST', body });
      onIn();
    } catch (e) {
      const wrong = way === 'user' ? 'That user or password is not valid.'
        : way === 'jwt' ? 'That JWT is not valid.' : 'That token is not valid.';
      setError(e.status === 401 ? wrong : e.message);
    }
  };
  return (
    <main class="login">
      <h1>Tern</h1>
      <form onSubmit={submit}>
        <label for="way">Log in with</label>
        <select id="way" value={way} onChange={(e) => { setWay(e.currentTarget.value); setError(''); }}>
          {Object.entries(LOGINS).map(([id, title]) => <option value={id}>{title}</option>)}
        </select>
        {way === 'token' && <>
          <label for="token">Operator token</label>
          <input id="token" type="password" autocomplete="off" {...field('token')} placeholder="tot1.…" required />
        </>}
        {way === 'user' && <>
          <label for="user">User</label>
          <input id="user" autocomplete="username" {...field('user')} required />
          <label for="password">Password</label>
          <input id="password" type="password" autocomplete="current-password" {...field('password')} required />
        </>}
        {way === 'jwt' && <>
          <label for="jwt">JWT</label>
          <textarea id="jwt" rows="4" autocomplete="off" {...field('jwt')} placeholder="eyJ…" required />
        </>}
        <button type="submit">Log in</button>
        {error && <p role="alert" class="error">{error}</p>}
      </form>
      <p class="hint">The token of <code>tern token add</code>, an operator user of the broker's <code>operators_file</code>, a JWT of the identity provider it trusts, or the login link the broker logged at its first start.</p>
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
        <span class="who">{/^(user|jwt):/.test(session.id) ? '' : 'token '}<b>{session.id}</b>{session.owner && <> of owner <b data-testid="owner">{session.owner}</b></>}</span>
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
