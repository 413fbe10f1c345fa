// Overview: the broker's figures, message rates in and out as a live chart of the last hour,
// and the connections refused lately (gathered by feed.js while the console is open).
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { watchFeed } from '../feed.js';

function Tile({ label, value, id }) {
  return (
    <div class="tile">
      <span class="label" id={`${id}-label`}>{label}</span>
      <span class="value" data-testid={id} aria-labelledby={`${id}-label`}>{value}</span>
    </div>
  );
}

const number = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en') : '–');
const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

function Chart({ series }) {
  const element = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(280, Math.min(900, element.current.clientWidth));
    plot.current = new uPlot({
      width, height: 200, title: 'Messages per second',
      series: [{}, { label: 'in', stroke: '#0a6cff', width: 2 }, { label: 'out', stroke: '#c2410c', width: 2 }],
      // At least a minute across, so the first points are not spread over years.
      scales: {
        x: {
          time: true,
          range: (u, min, max) => {
            const high = max ?? Date.now() / 1000;
            return [Math.min(min ?? high, high - 60), high];
          },
        },
      },
      axes: [{}, { size: 50 }],
    }, series, element.current);
    return () => plot.current.destroy();
  }, []);
  useEffect(() => plot.current && plot.current.setData(series), [series]);
  // `data-from`: the first point's time, from the broker's history when it has one.
  return <div ref={element} class="chart" role="img" data-testid="rate-chart"
    data-from={series[0].length ? series[0][0] : undefined}
    aria-label="Messages per second in and out over the last hour" />;
}

export function Overview() {
  const [feed, setFeed] = useState(null);
  useEffect(() => watchFeed((state) => setFeed({ ...state })), []);
  const { figures, error, series, refused } = feed || { series: [[], [], []], refused: [] };
  const f = figures || {};
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="tiles">
        <Tile id="connections" label="Connections" value={number(f.connections)} />
        <Tile id="sessions" label="Sessions" value={number(f.sessions)} />
        <Tile id="subscriptions" label="Subscriptions" value={number(f.subscriptions)} />
        <Tile id="rate-in" label="Messages in /s" value={figures ? f.rateIn.toFixed(1) : '–'} />
        <Tile id="rate-out" label="Messages out /s" value={figures ? f.rateOut.toFixed(1) : '–'} />
        <Tile id="queued" label="Queued / in flight / dead" value={`${number(f.queued)} / ${number(f.inflight)} / ${number(f.dead)}`} />
        <Tile id="commit" label="Store commit (mean)" value={f.commitMs == null ? '–' : `${f.commitMs.toFixed(2)} ms`} />
        <Tile id="retained" label="Retained messages" value={number(f.retained)} />
        <Tile id="memory" label="Bytes held for receivers" value={figures ? bytes(f.held) : '–'} />
        <Tile id="dropped" label="Dropped deliveries" value={number(f.dropped)} />
        <Tile id="resident" label="Process memory (resident)" value={f.resident == null ? '–' : bytes(f.resident)} />
      </div>
      <Chart series={series} />
      <h2 id="listeners-title">Listeners</h2>
      <div class="scroll">
        <table aria-labelledby="listeners-title">
          <thead><tr><th scope="col">Protocol</th><th scope="col">Address</th><th scope="col">Open connections</th></tr></thead>
          <tbody>
            {(f.listeners || []).map((l) => (
              <tr key={`${l.protocol} ${l.address}`}><td>{l.protocol}</td><td>{l.address}</td><td>{number(l.open)}</td></tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Refused connections</h2>
      {refused.length === 0 ? <p class="muted">None since this page opened.</p> : (
        <ul class="refused" aria-live="polite">
          {refused.map((r) => <li><time>{r.at.toLocaleTimeString()}</time> {r.client_id && <b>{r.client_id}</b>} {r.reason}</li>)}
        </ul>
      )}
    </section>
  );
}
