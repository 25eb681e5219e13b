// A count with its noun in the right number: "1 open socket", "2 open
// sockets", "0 chunks". No `vscode` import (the CLI and the helper may use it).

/** `${n} ${one}` when n is 1, else `${n} ${many}` (default: one + "s"). */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}
