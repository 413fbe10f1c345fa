// The firmware page's pure parts: semantic versions compared, and the release the broker
// offers a device at its next registration, by the broker's rule (docs/fleet.md, "The
// firmware catalogue"): the newest release for its platform, for its owner or every owner,
// whose tags it has and whose rollout takes it in.

// `1.10.0-rc.1` as [[1, 10, 0], ['rc', 1]], or null when it is not a semantic version.
function parse(text) {
  const match = /^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/.exec(text || '');
  if (!match) return null;
  const pre = match[4] ? match[4].split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)) : [];
  return [[Number(match[1]), Number(match[2]), Number(match[3])], pre];
}

// Negative, zero or positive as `a` is below, equal to or above `b` (semantic version order;
// a version that is not one is below every one that is).
export function compareVersions(a, b) {
  const [x, y] = [parse(a), parse(b)];
  if (!x || !y) return (x ? 1 : 0) - (y ? 1 : 0);
  for (let i = 0; i < 3; i += 1) if (x[0][i] !== y[0][i]) return x[0][i] - y[0][i];
  // A pre-release is below its release.
  if (!x[1].length || !y[1].length) return y[1].length - x[1].length;
  for (let i = 0; i < Math.min(x[1].length, y[1].length); i += 1) {
    const [p, q] = [x[1][i], y[1][i]];
    if (p === q) continue;
    if (typeof p !== typeof q) return typeof p === 'number' ? -1 : 1;
    return p < q ? -1 : 1;
  }
  return x[1].length - y[1].length;
}

// Where a device falls in a release's rollout, 0 to 99: the first four bytes of
// SHA-256(`udid/id`), big-endian, modulo 100.
export async function rolloutBucket(udid, id) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`${udid}/${id}`));
  return new DataView(digest).getUint32(0) % 100;
}

// The newest release that is for `device` (its platform, owner and tags, within the rollout),
// or null; the broker offers it when it is above the version the device registers with.
export async function newestFor(device, releases) {
  let newest = null;
  for (const r of releases) {
    if (r.platform !== device.platform || (r.owner && r.owner !== device.owner)) continue;
    if (!(r.tags || []).every((tag) => (device.tags || []).includes(tag))) continue;
    if (!parse(r.version) || (await rolloutBucket(device.udid, r.id)) >= r.rollout_percent) continue;
    if (!newest || compareVersions(r.version, newest.version) > 0) newest = r;
  }
  return newest;
}

// What a device's page says of its firmware against that release.
export function firmwareStanding(version, newest) {
  if (!newest) return 'no release for it';
  if (!parse(version)) return `${newest.version} (${newest.id}) offered to devices of a semantic version only`;
  if (compareVersions(newest.version, version) > 0) return `update available: ${newest.version} (${newest.id})`;
  return `up to date (newest: ${newest.version})`;
}
