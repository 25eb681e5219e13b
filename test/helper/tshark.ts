// Reading capture files back with the real tshark (installed by
// scripts/setup-system.sh): expert errors, Follow TCP Stream, fields.
import { spawnSync } from 'node:child_process';

export function tshark(args: string[], env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync('tshark', args, { encoding: 'utf8', env, maxBuffer: 256 * 1024 * 1024 });
  if (r.error) {
    throw new Error(`cannot run tshark (bash scripts/setup-system.sh installs it): ${r.error.message}`);
  }
  if (r.status !== 0) throw new Error(`tshark ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** tshark's expert items of severity error (malformed packets among them), as its text; '' when none. */
export function expertErrors(file: string): string {
  const out = tshark(['-r', file, '-q', '-z', 'expert,error']);
  const i = out.indexOf('Errors (');
  return i < 0 ? '' : out.slice(i);
}

/** One field per packet (tab-separated fields when several are asked for), only packets matching `filter`. */
export function fields(file: string, filter: string, names: string[]): string[][] {
  const out = tshark([
    '-r',
    file,
    '-Y',
    filter,
    '-T',
    'fields',
    '-E',
    'occurrence=a',
    ...names.flatMap((n) => ['-e', n]),
  ]);
  return out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split('\t'));
}

/**
 * `tshark -z follow,tcp,raw,N`: the bytes each node sent, in order (node 0
 * is the side whose address:port is printed first). Lines that start with a
 * tab are node 1's.
 */
export function followTcp(file: string, stream: number): { nodes: [string, string]; sent: [Buffer, Buffer] } {
  const out = tshark(['-r', file, '-q', '-z', `follow,tcp,raw,${stream}`]);
  const lines = out.split('\n');
  const nodes: [string, string] = ['', ''];
  const parts: [string[], string[]] = [[], []];
  let body = false;
  for (const l of lines) {
    const m = /^Node ([01]): (.*)$/.exec(l);
    if (m) {
      nodes[Number(m[1]) as 0 | 1] = m[2].trim();
      if (m[1] === '1') body = true;
      continue;
    }
    if (!body || l.startsWith('=====')) continue;
    if (!l.trim()) continue;
    if (l.startsWith('\t')) parts[1].push(l.trim());
    else parts[0].push(l.trim());
  }
  return {
    nodes,
    sent: [Buffer.from(parts[0].join(''), 'hex'), Buffer.from(parts[1].join(''), 'hex')],
  };
}
