// Topics: the tree of retained messages (read at once from the broker) and live traffic (an
// event stream of the token's topics, open while the page is shown); a topic's last value, JSON pretty-printed, numeric values as a sparkline;
// publishing a message; watching a filter.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, enc, payloadText, watch } from '../api.js';
import { find, insert, newNode, pretty } from '../tree.js';

const WATCHED_MAX = 200;

function Sparkline({ values }) {
  if (values.length < 2) return null;
  const min = Math.min(...values);
  const max = Math.max(...values);
  const span = max - min || 1;
  const points = values.map((v, i) => `${(i / (values.length - 1)) * 200},${40 - ((v - min) / span) * 36 - 2}`).join(' ');
  return (
    <svg class="spark" viewBox="0 0 200 40" role="img" aria-label={`Last ${values.length} values, from ${min} to ${max}`}>
      <polyline points={points} fill="none" stroke="currentColor" stroke-width="2" />
    </svg>
  );
}

function Branch({ node, open, toggle, select, selected }) {
  const children = [...node.children.values()].sort((a, b) => a.name.localeCompare(b.name));
  return (
    <ul role={node.path === '' ? 'tree' : 'group'} aria-label={node.path === '' ? 'Topics' : undefined}>
      {children.map((child) => {
        const expandable = child.children.size > 0;
        const isOpen = open.has(child.path);
        return (
          <li role="treeitem" aria-expanded={expandable ? String(isOpen) : undefined} aria-selected={selected === child.path ? 'true' : 'false'}>
            <span class="node">
              {expandable ? (
                <button type="button" class="twist" aria-label={`${isOpen ? 'Collapse' : 'Expand'} ${child.path}`} onClick={() => toggle(child.path)}>{isOpen ? '▾' : '▸'}</button>
              ) : <span class="twist" />}
              <button type="button" class="topic" data-topic={child.path} onClick={() => select(child.path)}>
                {child.name || '(empty)'}
              </button>
              {child.message && <span class="value-preview">{payloadText(child.message).slice(0, 40)}</span>}
              {expandable && <span class="count">{child.children.size}</span>}
            </span>
            {expandable && isOpen && <Branch node={child} open={open} toggle={toggle} select={select} selected={selected} />}
          </li>
        );
      })}
    </ul>
  );
}

function Detail({ node, changed }) {
  const [status, setStatus] = useState('');
  useEffect(() => setStatus(''), [node]);
  if (!node) return <p class="muted">Choose a topic.</p>;
  const m = node.message;
  const forget = async () => {
    if (!confirm(`Delete the retained message of ${node.path}?`)) return;
    try {
      await api(`/v1/admin/retained/${node.path.split('/').map(enc).join('/')}`, { method: 'DELETE' });
      node.message = { ...m, retain: false };
      setStatus('The retained message was deleted.');
      changed();
    } catch (e) {
      setStatus(`Refused: ${e.message}`);
    }
  };
  return (
    <div class="detail">
      <h2>{node.path}</h2>
      {m ? (
        <>
          <p class="meta">QoS {m.qos}{m.retain ? ' · retained' : ''}{m.content_type ? ` · ${m.content_type}` : ''}</p>
          <pre data-testid="topic-value">{pretty(payloadText(m))}</pre>
          <Sparkline values={node.series} />
          {m.retain && <button type="button" class="danger" onClick={forget}>Delete retained message</button>}
          <p role="status">{status}</p>
        </>
      ) : <p class="muted">No message on this topic itself.</p>}
    </div>
  );
}

function Publish({ topic }) {
  const [form, setForm] = useState({ topic: '', qos: '1', retain: false, payload: '', content_type: '', response_topic: '', user_properties: '', ttl: '' });
  const [status, setStatus] = useState('');
  useEffect(() => topic && setForm((f) => ({ ...f, topic })), [topic]);
  const set = (name) => (e) => setForm({ ...form, [name]: e.currentTarget.type === 'checkbox' ? e.currentTarget.checked : e.currentTarget.value });
  const submit = async (event) => {
    event.preventDefault();
    const message = { topic: form.topic, payload: form.payload, qos: Number(form.qos), retain: form.retain };
    if (form.content_type) message.content_type = form.content_type;
    if (form.response_topic) message.response_topic = form.response_topic;
    if (form.ttl) message.ttl = Number(form.ttl);
    const props = form.user_properties.split('\n').filter((l) => l.includes('='));
    if (props.length) message.user_properties = props.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]);
    try {
      const answer = await api('/v1/console/publish', { method: 'POST', body: message });
      setStatus(`Published to ${form.topic}: ${answer.matched ?? 0} subscription(s) matched.`);
    } catch (e) {
      setStatus(`Refused: ${e.message}`);
    }
  };
  return (
    <form class="publish" onSubmit={submit} aria-labelledby="publish-title">
      <h2 id="publish-title">Publish</h2>
      <label for="pub-topic">Topic</label>
      <input id="pub-topic" value={form.topic} onInput={set('topic')} required />
      <div class="row">
        <label for="pub-qos">QoS</label>
        <select id="pub-qos" value={form.qos} onChange={set('qos')}>
          <option value="0">0</option><option value="1">1</option><option value="2">2</option>
        </select>
        <label class="check"><input type="checkbox" checked={form.retain} onChange={set('retain')} /> Retain</label>
      </div>
      <label for="pub-payload">Payload</label>
      <textarea id="pub-payload" rows="4" value={form.payload} onInput={set('payload')} />
      <details>
        <summary>MQTT 5 properties</summary>
        <label for="pub-ct">Content type</label>
        <input id="pub-ct" value={form.content_type} onInput={set('content_type')} />
        <label for="pub-rt">Response topic</label>
        <input id="pub-rt" value={form.response_topic} onInput={set('response_topic')} />
        <label for="pub-ttl">Message expiry (seconds)</label>
        <input id="pub-ttl" inputmode="numeric" value={form.ttl} onInput={set('ttl')} />
        <label for="pub-up">User properties (key=value, one a line)</label>
        <textarea id="pub-up" rows="2" value={form.user_properties} onInput={set('user_properties')} />
      </details>
      <button type="submit">Publish</button>
      <p role="status" data-testid="publish-status">{status}</p>
    </form>
  );
}

function Watch() {
  const [filter, setFilter] = useState('');
  const [watching, setWatching] = useState('');
  const [rows, setRows] = useState([]);
  useEffect(() => {
    if (!watching) return undefined;
    setRows([]);
    return watch(watching, (m) => setRows((r) => [{ at: new Date(), ...m }, ...r].slice(0, WATCHED_MAX)));
  }, [watching]);
  return (
    <section aria-labelledby="watch-title">
      <h2 id="watch-title">Watch a filter</h2>
      <form onSubmit={(e) => { e.preventDefault(); setWatching(filter); }} class="row">
        <label for="watch-filter">Filter</label>
        <input id="watch-filter" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} placeholder="sensors/#" required />
        <button type="submit">Watch</button>
        {watching && <button type="button" class="quiet" onClick={() => setWatching('')}>Stop</button>}
      </form>
      <ol class="messages" aria-live="polite" data-testid="watched">
        {rows.map((m) => <li><time>{m.at.toLocaleTimeString()}</time> <b>{m.topic}</b> <code>{payloadText(m)}</code></li>)}
      </ol>
    </section>
  );
}

export function Topics({ topics }) {
  const root = useRef(newNode('', ''));
  const [version, setVersion] = useState(0);
  const [open, setOpen] = useState(new Set());
  const [selected, setSelected] = useState('');
  const [error, setError] = useState('');
  const [live, setLive] = useState(false);
  useEffect(() => {
    let queued = false;
    const redraw = () => {
      // Live traffic is drawn at most every 250 ms, however fast it comes.
      if (queued) return;
      queued = true;
      setTimeout(() => { queued = false; setVersion((v) => v + 1); }, 250);
    };
    // Live traffic of the token's topics, while this page is shown.
    const off = watch(topics && topics.length ? topics.slice(0, 16) : ['#'], (data) => {
      insert(root.current, data, payloadText(data));
      redraw();
    }, setLive);
    // The retained messages of the token's topics (`#` would be refused to a narrower token).
    const filters = topics && topics.length ? topics.slice(0, 16) : ['#'];
    // A filter in the path is its levels, each encoded (`#` as %23).
    const path = (filter) => filter.split('/').map(enc).join('/');
    Promise.all(filters.map((f) => api(`/v1/admin/retained/${path(f)}?limit=1000`))).then((answers) => {
      for (const answer of answers) {
        for (const m of answer.retained) insert(root.current, { ...m, retain: true }, payloadText(m));
      }
      setVersion((v) => v + 1);
    }).catch((e) => setError(e.message));
    return off;
  }, []);
  const toggle = (path) => setOpen((o) => {
    const next = new Set(o);
    if (next.has(path)) next.delete(path); else next.add(path);
    return next;
  });
  return (
    <section aria-labelledby="topics-title" data-version={version} data-live={String(live)}>
      <h1 id="topics-title">Topics</h1>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="split">
        <div class="tree">
          {root.current.children.size === 0 ? <p class="muted">No retained messages or traffic yet.</p>
            : <Branch node={root.current} open={open} toggle={toggle} select={setSelected} selected={selected} />}
        </div>
        <Detail node={selected ? find(root.current, selected) : null} changed={() => setVersion((v) => v + 1)} />
      </div>
      <Publish topic={selected} />
      <Watch />
    </section>
  );
}
