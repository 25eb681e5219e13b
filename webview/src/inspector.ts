// The data inspector's values for the bytes at an offset: integers of 1, 2,
// 4 and 8 bytes, signed and unsigned, little and big endian, and the UTF-8
// text of the selection. Pure: the panel renders what this returns.

export interface InspectorRow {
  label: string;
  value: string;
}

const UTF8_SHOWN = 256;

export function inspect(bytes: Uint8Array, offset: number, length: number): InspectorRow[] {
  const rows: InspectorRow[] = [
    { label: 'Offset', value: `${offset} (0x${offset.toString(16).toUpperCase()})` },
    { label: 'Length', value: `${length} byte${length === 1 ? '' : 's'}` },
  ];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const has = (w: number) => offset + w <= bytes.length;
  const na = 'not enough bytes';
  rows.push({ label: 'uint8', value: has(1) ? String(view.getUint8(offset)) : na });
  rows.push({ label: 'int8', value: has(1) ? String(view.getInt8(offset)) : na });
  for (const [w, get] of [
    [2, (le: boolean, signed: boolean) => (signed ? view.getInt16(offset, le) : view.getUint16(offset, le))],
    [4, (le: boolean, signed: boolean) => (signed ? view.getInt32(offset, le) : view.getUint32(offset, le))],
    [
      8,
      (le: boolean, signed: boolean) =>
        signed ? view.getBigInt64(offset, le) : view.getBigUint64(offset, le),
    ],
  ] as const) {
    for (const signed of [false, true]) {
      for (const le of [true, false]) {
        rows.push({
          label: `${signed ? 'int' : 'uint'}${w * 8} ${le ? 'LE' : 'BE'}`,
          value: has(w) ? String(get(le, signed)) : na,
        });
      }
    }
  }
  const slice = bytes.subarray(
    offset,
    offset + Math.min(length || Math.min(4, bytes.length - offset), UTF8_SHOWN),
  );
  const text = new TextDecoder('utf-8', { fatal: false }).decode(slice);
  rows.push({
    label: 'UTF-8',
    value: slice.length
      ? JSON.stringify(text) + (length > UTF8_SHOWN ? ` (first ${UTF8_SHOWN} bytes)` : '')
      : '(none)',
  });
  return rows;
}
