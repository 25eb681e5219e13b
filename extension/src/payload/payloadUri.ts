// Names of payload documents: `nke-payload:/<id>/<title>.<ext>`, one text and
// one hex document per held chunk. The id (first path segment) is what the
// file system provider reads; the last segment is what an editor tab shows,
// so it names the process, the direction and the socket. The extension
// (.nkepayload / .nkehex) picks the language, and with it the settings that
// keep an editor from rewriting payload bytes on save (package.json
// configurationDefaults). No `vscode` import.
import type { PendingView } from '../shared/helperProtocol';

export const PAYLOAD_SCHEME = 'nke-payload';

export type PayloadDocKind = 'text' | 'hex';

const EXTENSION: Record<PayloadDocKind, string> = { text: '.nkepayload', hex: '.nkehex' };

/**
 * The process name comes from the traced program (hostile): only plain
 * characters reach a tab title, never a slash, a control or a bidi character.
 */
function safeName(s: string): string {
  const plain = s.replace(/[^A-Za-z0-9._+@-]/g, '_').slice(0, 32);
  return plain || 'process';
}

function endpoint(e: { address: string; port: number } | undefined): string | undefined {
  if (!e) return undefined;
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** "python3 ↑ out 127.0.0.1:8080 · socket 3:1 · #17" */
export function payloadTitle(v: PendingView): string {
  const peer = endpoint(v.remote) ?? endpoint(v.local) ?? 'no address';
  const dir = v.direction === 'in' ? '↓ in' : '↑ out';
  return `${safeName(v.process)} ${dir} ${peer} · socket ${v.socketId.replace(/[^0-9:]/g, '')} · #${v.id}`;
}

/** The path of a payload document (scheme and authority are the caller's). */
export function payloadPath(v: PendingView, kind: PayloadDocKind): string {
  return `/${v.id}/${payloadTitle(v)}${EXTENSION[kind]}`;
}

/** The payload id and form a payload document path names, or undefined. */
export function parsePayloadPath(path: string): { id: string; kind: PayloadDocKind } | undefined {
  const m = /^\/(\d+)\/[^/]*?(\.nkepayload|\.nkehex)$/.exec(path);
  if (!m) return undefined;
  return { id: m[1], kind: m[2] === '.nkehex' ? 'hex' : 'text' };
}
