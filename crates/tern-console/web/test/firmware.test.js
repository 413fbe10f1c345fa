// The firmware page's pure parts: version order, the rollout's buckets (the broker's, by
// SHA-256), and the newest release for a device.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareVersions, firmwareStanding, newestFor, rolloutBucket } from '../src/firmware.js';

test('versions compare in semantic version order', () => {
  assert.ok(compareVersions('1.10.0', '1.9.0') > 0);
  assert.ok(compareVersions('1.8.0-rc.1', '1.8.0') < 0);
  assert.ok(compareVersions('1.8.0-rc.2', '1.8.0-rc.10') < 0);
  assert.equal(compareVersions('v1.2.3', '1.2.3'), 0);
  assert.ok(compareVersions('nightly', '0.0.1') < 0);
});

test("a device's rollout bucket is the broker's", async () => {
  // SHA-256("d1/fw-1.8.0") and SHA-256("d2/half"): first four bytes, big-endian, mod 100.
  assert.equal(await rolloutBucket('d1', 'fw-1.8.0'), 47);
  assert.equal(await rolloutBucket('d2', 'half'), 2);
  assert.equal(await rolloutBucket('d1', 'half'), 60);
});

test('the newest release for a device passes its platform, owner, tags and rollout', async () => {
  const release = (id, version, more = {}) => ({ id, version, platform: 'esp32', tags: [], rollout_percent: 100, ...more });
  const releases = [
    release('a', '1.8.0'),
    release('b', '1.10.0', { owner: 'other' }),
    release('c', '1.9.0', { tags: ['beta'] }),
    release('half', '2.0.0', { rollout_percent: 50 }),
    release('d', '3.0.0', { platform: 'esp8266' }),
  ];
  const d1 = { udid: 'd1', owner: 'acme', platform: 'esp32', tags: ['beta'] };
  assert.equal((await newestFor(d1, releases)).id, 'c');
  const d2 = { ...d1, udid: 'd2', tags: [] };
  assert.equal((await newestFor(d2, releases)).id, 'half');
  assert.equal(await newestFor({ ...d1, platform: 'rp2040' }, releases), null);
  assert.equal(firmwareStanding('1.7.24', releases[0]), 'update available: 1.8.0 (a)');
  assert.equal(firmwareStanding('1.8.0', releases[0]), 'up to date (newest: 1.8.0)');
  assert.equal(firmwareStanding('1.8.0', null), 'no release for it');
});
