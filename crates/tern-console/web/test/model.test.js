// The front end's pure parts, without a browser (run by `node --test`, from the crate's tests).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { joinHistory, listenersOf, parseMetrics, total } from '../src/metrics.js';
import { find, insert, newNode, numberOf, pretty } from '../src/tree.js';

test('metrics are read from the Prometheus text, summed over labels', () => {
  const text = [
    '# HELP tern_messages_received_total messages received',
    '# TYPE tern_messages_received_total counter',
    'tern_messages_received_total{qos="0"} 5',
    'tern_messages_received_total{qos="1"} 7',
    'tern_queue_messages{state="queued"} 3',
    'tern_queue_messages{state="dead"} 1',
    'tern_http_requests_total{route="/v1/pub/{*topic}",method="POST",status="200"} 2',
    'tern_connections 4',
  ].join('\n');
  const m = parseMetrics(text);
  assert.equal(total(m, 'tern_messages_received_total'), 12);
  assert.equal(total(m, 'tern_queue_messages', { state: 'dead' }), 1);
  assert.equal(total(m, 'tern_http_requests_total', { route: '/v1/pub/{*topic}' }), 2);
  assert.equal(total(m, 'tern_connections'), 4);
  assert.equal(total(m, 'absent'), 0);
});

test("the broker's history comes before the chart's own points, the last `max` kept", () => {
  const samples = [{ at: 10, in: 1, out: 2 }, { at: 20, in: 3, out: 4 }, { at: 30, in: 5, out: 6 }];
  // The tab's first point at 25: the sample at 30 is of its time already.
  assert.deepEqual(joinHistory(samples, [[25], [9], [8]], 10), [[10, 20, 25], [1, 3, 9], [2, 4, 8]]);
  assert.deepEqual(joinHistory(samples, [[], [], []], 2), [[20, 30], [3, 5], [4, 6]]);
  assert.deepEqual(joinHistory([], [[25], [9], [8]], 10), [[25], [9], [8]]);
});

test("each listener's open connections are read with its protocol and address", () => {
  const m = parseMetrics([
    'tern_listener_connections{protocol="mqtt",address="127.0.0.1:1883"} 3',
    'tern_listener_connections{protocol="wss",address="[::1]:8884"} 0',
  ].join('\n'));
  assert.deepEqual(listenersOf(m), [
    { protocol: 'mqtt', address: '127.0.0.1:1883', open: 3 },
    { protocol: 'wss', address: '[::1]:8884', open: 0 },
  ]);
  assert.deepEqual(listenersOf(parseMetrics('tern_connections 1')), []);
});

test('the tree keeps each topic by level, its last message and its numbers', () => {
  const root = newNode('', '');
  insert(root, { topic: 'site/a/t', payload: '21.5' }, '21.5');
  insert(root, { topic: 'site/a/t', payload: '{"t": 22}' }, '{"t": 22}');
  insert(root, { topic: 'site/b', payload: 'open' }, 'open');
  insert(root, { topic: '/acme/d1/status', payload: '{}' }, '{}');
  assert.deepEqual([...root.children.keys()].sort(), ['', 'site']);
  const node = find(root, 'site/a/t');
  assert.equal(node.message.payload, '{"t": 22}');
  assert.deepEqual(node.series, [21.5, 22]);
  assert.equal(find(root, 'site/b').series.length, 0);
  assert.equal(find(root, '/acme/d1/status').path, '/acme/d1/status');
  assert.equal(find(root, 'site/c'), null);
});

test('numbers and pretty-printing', () => {
  assert.equal(numberOf('-3e2'), -300);
  assert.equal(numberOf('{"on": true, "v": 7}'), 7);
  assert.equal(numberOf('text'), null);
  assert.equal(numberOf(''), null);
  assert.equal(pretty('{"a":[1]}'), '{\n  "a": [\n    1\n  ]\n}');
  assert.equal(pretty('plain'), 'plain');
  assert.equal(pretty('42'), '42');
});

test('notifications are merged from the listing and the events, keeping what events omit', async () => {
  const { merge, shownIn, deliveryOf } = await import('../src/notify.js');
  const raised = { owner: 'acme', udid: 'd1', nid: 'door', direction: 'from_device', state: 'pending', created: 5, change: 'raised', expires_in: 60 };
  let list = merge([], raised);
  assert.deepEqual(list, [{ owner: 'acme', udid: 'd1', nid: 'door', direction: 'from_device', state: 'pending', created: 5 }]);
  list = merge(list, { ...raised, udid: 'd2' });
  list = merge(list, { ...raised, state: 'answered', response: true, delivered: false, change: 'answered' });
  assert.equal(list.length, 2);
  assert.equal(list[0].created, 5);
  assert.equal(deliveryOf(list[0]), 'not delivered yet');
  list = merge(list, { ...raised, state: 'answered', response: true, delivered: true, change: 'delivered' });
  assert.equal(deliveryOf(list[0]), 'delivered');
  // A listing's time of delivery is kept when an event says only that it was.
  list = merge([{ ...list[0], delivered: 42 }], { ...raised, state: 'answered', delivered: true });
  assert.equal(list[0].delivered, 42);
  // An event older than the listing moves nothing back.
  assert.equal(merge(list, raised), list);
  assert.equal(merge(list, { ...raised, state: 'answered', delivered: false }).at(0).delivered, 42);
  assert.deepEqual([shownIn(list[0], 'all'), shownIn(list[0], 'pending'), shownIn(list[0], 'answered')], [true, false, true]);
  assert.equal(deliveryOf({ state: 'pending', direction: 'from_device' }), '');
});

test('a fleet page is asked for with the filters set and the cursor, pages joined once', async () => {
  const { devicesQuery, appendPage } = await import('../src/fleet.js');
  assert.equal(devicesQuery({}), '?limit=100');
  assert.equal(devicesQuery({ owner: 'acme', online: '1', platform: ' ', q: 'hall sensor' }, 'd 9', 50),
    '?owner=acme&online=1&q=hall%20sensor&cursor=d%209&limit=50');
  assert.equal(devicesQuery({ tag: 'door', firmware: '1.7.24' }), '?firmware=1.7.24&tag=door&limit=100');
  const joined = appendPage([{ udid: 'a' }, { udid: 'b' }], [{ udid: 'b' }, { udid: 'c' }]);
  assert.deepEqual(joined.map((d) => d.udid), ['a', 'b', 'c']);
});

test('a fleet changed elsewhere is asked for again as far as it is shown, within a page', async () => {
  const { refreshLimit, LISTING_CHANGES } = await import('../src/fleet.js');
  assert.equal(refreshLimit(0), 100);
  assert.equal(refreshLimit(100), 100);
  assert.equal(refreshLimit(101), 200);
  assert.equal(refreshLimit(250, 50), 250);
  assert.equal(refreshLimit(5000), 1000);
  assert.ok(LISTING_CHANGES.has('deleted') && !LISTING_CHANGES.has('online'));
});

test("the inbox's pages, newest first, go before what it holds, each once", async () => {
  const { olderPage } = await import('../src/notify.js');
  const n = (nid, state = 'pending') => ({ owner: 'o', udid: 'd', nid, state });
  const first = olderPage([n('c'), n('b')], []);
  assert.deepEqual(first.map((x) => x.nid), ['b', 'c']);
  // An event appended c2; the next page (older) holds b again, answered since: merged once.
  const held = [...first, n('c2')];
  const joined = olderPage([n('b', 'answered'), n('a')], held);
  assert.deepEqual(joined.map((x) => x.nid), ['a', 'b', 'c', 'c2']);
  assert.equal(joined[1].state, 'answered');
});

test("a device's recent message is shown as its text, or its bytes in base64", async () => {
  const { messageText } = await import('../src/device.js');
  assert.equal(messageText({ payload: '{"t":1}', payload_base64: 'eyJ0IjoxfQ==' }), '{"t":1}');
  assert.equal(messageText({ payload: null, payload_base64: '/w==' }), 'base64:/w==');
});
