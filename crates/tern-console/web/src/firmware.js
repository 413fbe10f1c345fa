// The firmware page's wording of what the broker offers a device: the `offer` and
// `offer_status` of `GET /v1/fleet/devices/{udid}`, worked out by the broker itself with the
// rule its registration answers use (docs/fleet.md, "The firmware catalogue").
export function offerText(status, offer) {
  if (status === 'update_available' && offer) return `update available: ${offer.version} (${offer.id})`;
  if (status === 'up_to_date') return 'up to date';
  if (status === 'unversioned') return 'offered nothing: its version is not a semantic version';
  return 'no release for it';
}
