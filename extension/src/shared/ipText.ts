// IP address text -> the ABI's family and 16 network-order bytes: the one
// parser of addresses, used by the rule fields (ruleFields.ts, for
// localAddr/remoteAddr) and by the tests' ABI codecs. No Node import.
import { AbiError, NKE_AF_INET, NKE_AF_INET6 } from './abi';

function parseIPv4(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i])) return undefined;
    const n = Number(parts[i]);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIPv6(s: string): Uint8Array | undefined {
  let text = s;
  // A trailing dotted IPv4 (::ffff:1.2.3.4) stands for the last two groups:
  // rewrite it as hex groups and parse the rest uniformly.
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.includes('.', lastColon)) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (!v4) return undefined;
    const hi = ((v4[0] << 8) | v4[1]).toString(16);
    const lo = ((v4[2] << 8) | v4[3]).toString(16);
    text = `${text.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if (!head || !rest) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const zeros = 8 - head.length - rest.length;
    if (zeros < 1) return undefined;
    groups = [...head, ...new Array<number>(zeros).fill(0), ...rest];
  } else {
    groups = head;
    if (groups.length !== 8) return undefined;
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/**
 * Parses an IP address alone ("10.0.0.1", "::1", "fe80::1%4") into the ABI's
 * family + 16-byte network-order array. Throws AbiError on anything else.
 */
export function parseIp(text: string): { family: number; addr: Uint8Array; scope_id: number } {
  const addr = new Uint8Array(16);
  const v4 = parseIPv4(text);
  if (v4) {
    addr.set(v4);
    return { family: NKE_AF_INET, addr, scope_id: 0 };
  }
  const pct = text.indexOf('%');
  const ipText = pct < 0 ? text : text.slice(0, pct);
  let scope_id = 0;
  if (pct >= 0) {
    const scope = text.slice(pct + 1);
    if (!/^[0-9]{1,10}$/.test(scope) || Number(scope) > 0xffffffff) {
      throw new AbiError(`IPv6 scope must be a numeric interface index: ${JSON.stringify(text)}`);
    }
    scope_id = Number(scope);
  }
  const v6 = parseIPv6(ipText);
  if (!v6) throw new AbiError(`not an IPv4 or IPv6 address: ${JSON.stringify(text)}`);
  return { family: NKE_AF_INET6, addr: v6, scope_id };
}
