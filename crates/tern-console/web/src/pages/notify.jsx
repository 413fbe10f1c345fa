// Actionable notifications: a live inbox (the listing, a page at a time, newest first, then
// `notification` events merged in),
// answered with the device's response type; each answer's delivery as the device acknowledges
// it; the ones of a device on its page, and a question asked of it.
import { useEffect, useState } from 'preact/hooks';
import { api, enc, onEvent } from '../api.js';
import { deliveryOf, keyOf, merge, olderPage, shownIn } from '../notify.js';

const STATES = ['pending', 'answered', 'expired', 'cancelled', 'all'];

// The inbox's page size.
export const PAGE = 50;

// The notifications the token sees (of `udid`, when given; in `state`, for the inbox, read a
// page at a time, newest first), kept live. Also: the cursor of the next page, and `more()`
// to read it.
function useNotifications(udid, state) {
  const [list, setList] = useState(null);
  const [next, setNext] = useState(null);
  const [error, setError] = useState('');
  const paged = state !== undefined;
  const query = (cursor) => {
    if (!paged) return `?udid=${enc(udid)}`;
    const q = [`order=newest`, `limit=${PAGE}`];
    if (state !== 'all') q.push(`state=${enc(state)}`);
    if (cursor) q.push(`cursor=${enc(cursor)}`);
    return `?${q.join('&')}`;
  };
  const more = async () => {
    try {
      const a = await api(`/v1/fleet/notifications${query(next)}`);
      setList((l) => olderPage(a.notifications, l || []));
      setNext(a.next || null);
    } catch (e) {
      setError(e.message);
    }
  };
  useEffect(() => {
    setList(null);
    const mine = (n) => !udid || n.udid === udid;
    // Events that come while the listing is on its way are merged into it when it lands
    // (merging only moves forward, so those it already holds change nothing).
    let early = [];
    const off = onEvent((name, data) => {
      if (name !== 'notification' || !mine(data)) return;
      if (early) early.push(data);
      else setList((l) => merge(l, data));
    });
    api(`/v1/fleet/notifications${query(null)}`)
      .then((a) => {
        setList(early.reduce(merge, olderPage(a.notifications, [])));
        setNext(a.next || null);
        early = null;
      })
      .catch((e) => setError(e.message));
    return off;
  }, [udid, state]);
  return [list, (n) => setList((l) => merge(l || [], n)), error, next, more];
}

function AnswerForm({ n, id, send }) {
  const [text, setText] = useState(n.response_type === 'choice' ? (n.choices || [])[0] || '' : '');
  if (n.response_type === 'bool') {
    return (
      <div class="row" role="group" aria-label={`Answer ${n.nid}`}>
        <button type="button" onClick={() => send(true)}>Yes</button>
        <button type="button" class="quiet" onClick={() => send(false)}>No</button>
      </div>
    );
  }
  const submit = (event) => {
    event.preventDefault();
    send(text);
  };
  return (
    <form class="row" onSubmit={submit}>
      <label for={`${id}-answer`}>Answer</label>
      {n.response_type === 'choice'
        ? (
          <select id={`${id}-answer`} value={text} onChange={(e) => setText(e.currentTarget.value)}>
            {(n.choices || []).map((c) => <option value={c}>{c}</option>)}
          </select>
        )
        : <input id={`${id}-answer`} value={text} onInput={(e) => setText(e.currentTarget.value)} required />}
      <button type="submit">Send</button>
    </form>
  );
}

const when = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : '');
const said = (response) => (response === true ? 'yes' : response === false ? 'no' : String(response));

function Notification({ n, changed, showDevice }) {
  const [error, setError] = useState('');
  const id = `n-${keyOf(n).replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const act = async (what, body) => {
    try {
      changed(await api(`/v1/fleet/notifications/${enc(n.nid)}/${what}`, { method: 'POST', body: { ...body, udid: n.udid } }));
      setError('');
    } catch (e) {
      setError(e.message);
    }
  };
  const delivery = deliveryOf(n);
  const asked = n.direction === 'to_device';
  return (
    <li class="card" data-nid={n.nid} data-udid={n.udid} aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>{n.body} <span class={`state ${n.state}`} data-testid="notification-state">{n.state}</span></h2>
      <p class="meta">
        {showDevice && <>device <a href={`#/fleet/${enc(n.udid)}`}>{n.udid}</a> of {n.owner} · </>}
        {asked ? 'asked of the device' : 'from the device'} · id {n.nid}
        {n.created ? ` · ${when(n.created)}` : ''}
        {n.state === 'pending' && n.expires ? ` · expires ${when(n.expires)}` : ''}
      </p>
      {n.response !== undefined && <p>Answer: <b data-testid="response">{said(n.response)}</b></p>}
      {delivery && <p data-testid="delivery" class={n.delivered ? 'online' : 'muted'}>{asked ? 'Question ' : 'Answer '}{delivery}{typeof n.delivered === 'number' ? ` ${when(n.delivered)}` : ''}</p>}
      {n.state === 'pending' && !asked && <AnswerForm n={n} id={id} send={(response) => act('answer', { response })} />}
      {n.state === 'pending' && <button type="button" class="quiet" onClick={() => act('cancel', {})}>Withdraw</button>}
      {error && <p role="alert" class="error">{error}</p>}
    </li>
  );
}

function List({ list, state, changed, showDevice }) {
  const shown = list.filter((n) => shownIn(n, state)).reverse();
  if (shown.length === 0) return <p class="muted">No {state === 'all' ? '' : `${state} `}notifications.</p>;
  return <ul class="cards">{shown.map((n) => <Notification key={keyOf(n)} n={n} changed={changed} showDevice={showDevice} />)}</ul>;
}

function StateFilter({ id, state, setState }) {
  return (
    <div class="row">
      <label for={id}>Show</label>
      <select id={id} value={state} onChange={(e) => setState(e.currentTarget.value)}>
        {STATES.map((s) => <option value={s}>{s}</option>)}
      </select>
    </div>
  );
}

export function Notifications() {
  const [state, setState] = useState('pending');
  const [list, changed, error, next, more] = useNotifications('', state);
  const pending = (list || []).filter((n) => n.state === 'pending').length;
  return (
    <section aria-labelledby="notifications-title">
      <h1 id="notifications-title">Notifications</h1>
      {error && <p role="alert" class="error">{error}</p>}
      <p class="muted" role="status" data-testid="pending-count">{list ? `${pending} pending` : 'Loading…'}</p>
      <StateFilter id="notifications-state" state={state} setState={setState} />
      {list && <List list={list} state={state} changed={changed} showDevice />}
      {list && <p class="muted" data-testid="inbox-count">{list.filter((n) => shownIn(n, state)).length} shown{next ? ', more older ones' : ''}</p>}
      {next && <button type="button" class="quiet" onClick={more}>Older notifications</button>}
    </section>
  );
}

function Ask({ udid, changed }) {
  const [form, setForm] = useState({ body: '', type: 'bool', choices: '' });
  const [status, setStatus] = useState('');
  const set = (name) => (e) => setForm({ ...form, [name]: e.currentTarget.value });
  const submit = async (event) => {
    event.preventDefault();
    const body = { udid, body: form.body, response_type: form.type };
    if (form.type === 'choice') body.choices = form.choices.split(',').map((c) => c.trim()).filter(Boolean);
    try {
      changed(await api('/v1/fleet/notifications', { method: 'POST', body }));
      setForm({ ...form, body: '' });
      setStatus('Asked.');
    } catch (e) {
      setStatus(`Refused: ${e.message}`);
    }
  };
  return (
    <form class="ask" onSubmit={submit} aria-labelledby="ask-title">
      <h3 id="ask-title">Ask the device</h3>
      <label for="ask-body">Question</label>
      <input id="ask-body" value={form.body} onInput={set('body')} required maxLength={4096} />
      <div class="row">
        <label for="ask-type">Response type</label>
        <select id="ask-type" value={form.type} onChange={set('type')}>
          <option value="bool">yes/no</option><option value="string">text</option><option value="choice">choice</option>
        </select>
        {form.type === 'choice' && <><label for="ask-choices">Choices</label><input id="ask-choices" value={form.choices} onInput={set('choices')} placeholder="eco, boost" required /></>}
        <button type="submit">Ask</button>
      </div>
      <p role="status">{status}</p>
    </form>
  );
}

// A device's notifications, for its page: the pending ones (or all), and a question to ask.
export function DeviceNotifications({ udid }) {
  const [list, changed, error] = useNotifications(udid);
  const [state, setState] = useState('pending');
  return (
    <section aria-labelledby="device-notifications-title">
      <h2 id="device-notifications-title">Notifications</h2>
      {error && <p role="alert" class="error">{error}</p>}
      <StateFilter id="device-notifications-state" state={state} setState={setState} />
      {list && <List list={list} state={state} changed={changed} showDevice={false} />}
      <Ask udid={udid} changed={changed} />
    </section>
  );
}
