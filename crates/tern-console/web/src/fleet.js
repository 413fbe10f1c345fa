// The fleet page's pure parts: the query of a page of `/v1/fleet/devices` from the form's
// filters, and pages joined as "More" brings them.

// The fields of the form the server filters on, by their query names.
export const FILTERS = ['owner', 'online', 'platform', 'firmware', 'tag', 'q'];

// The query string (with its `?`, or '') of the page after `cursor` for `filters`; empty
// filters are left out (the server reads an empty one as none anyway).
export function devicesQuery(filters, cursor = null, limit = 100) {
  const parts = [];
  for (const name of FILTERS) {
    const value = (filters[name] ?? '').trim();
    if (value) parts.push(`${name}=${encodeURIComponent(value)}`);
  }
  if (cursor) parts.push(`cursor=${encodeURIComponent(cursor)}`);
  parts.push(`limit=${limit}`);
  return `?${parts.join('&')}`;
}

// `devices` with the next page appended; a device already listed (the page was asked for
// twice) is not listed again.
export function appendPage(devices, page) {
  const seen = new Set(devices.map((d) => d.udid));
  return [...devices, ...page.filter((d) => !seen.has(d.udid))];
}

// The most devices one page of the server holds.
export const PAGE_MAX = 1000;

// How many devices to ask for again, from the first, when the fleet changed elsewhere: as
// many pages as are shown (so `More` need not be pressed again), within one page of the
// server's.
export function refreshLimit(shown, page = 100) {
  return Math.min(PAGE_MAX, Math.max(page, Math.ceil(shown / page) * page));
}

// Whether an `event: fleet` changes which devices a list holds or what it says of them
// (its state alone is changed in place, from `online` and `offline`).
export const LISTING_CHANGES = new Set(['added', 'changed', 'deleted']);
