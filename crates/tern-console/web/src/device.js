// A device's page's pure parts.

// A recent message's payload as text: its UTF-8 text, or its bytes as base64 when they are
// not text.
export function messageText(m) {
  if (typeof m.payload === 'string') return m.payload;
  return `base64:${m.payload_base64 || ''}`;
}
