// The device page's wording of the broker's offer (the offer itself is the broker's).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offerText } from '../src/firmware.js';

test("a device's page words the broker's offer", () => {
  assert.equal(offerText('update_available', { id: 'a', version: '1.8.0' }), 'update available: 1.8.0 (a)');
  assert.equal(offerText('up_to_date', null), 'up to date');
  assert.equal(offerText('no_release', null), 'no release for it');
  assert.equal(offerText('unversioned', null), 'offered nothing: its version is not a semantic version');
});
