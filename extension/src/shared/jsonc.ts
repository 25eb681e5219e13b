// JSON with comments (JSONC, as in VS Code's settings): `//` and `/* */`
// comments and trailing commas are allowed; everything else is strict JSON.
// A syntax error names its line and column and what was expected there, so
// a person can fix a rules file without counting characters. Pure code.

export class JsoncError extends Error {
  constructor(
    readonly line: number,
    readonly column: number,
    readonly reason: string,
  ) {
    super(`line ${line}, column ${column}: ${reason}`);
  }
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const WORD = /[A-Za-z_$][\w$]*/y;

/** Parses JSONC text; throws JsoncError at the first syntax error. */
export function parseJsonc(text: string): unknown {
  let i = 0;

  const fail = (reason: string, at = i): never => {
    let line = 1;
    let col = 1;
    for (let k = 0; k < at && k < text.length; k++) {
      if (text[k] === '\n') {
        line++;
        col = 1;
      } else col++;
    }
    throw new JsoncError(line, col, reason);
  };

  const skip = (): void => {
    for (;;) {
      const c = text[i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\ufeff') i++;
      else if (c === '/' && text[i + 1] === '/') {
        const nl = text.indexOf('\n', i);
        i = nl < 0 ? text.length : nl + 1;
      } else if (c === '/' && text[i + 1] === '*') {
        const end = text.indexOf('*/', i + 2);
        if (end < 0) fail('a /* comment is not closed with */');
        i = end + 2;
      } else return;
    }
  };

  const token = (re: RegExp): string | undefined => {
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) return undefined;
    i += m[0].length;
    return m[0];
  };

  const describe = (): string => {
    if (i >= text.length) return 'the end of the file';
    WORD.lastIndex = i;
    const w = WORD.exec(text);
    return w ? `"${w[0]}"` : `"${text[i]}"`;
  };

  const value = (): unknown => {
    skip();
    const c = text[i];
    if (c === '{') return object();
    if (c === '[') return array();
    if (c === '"') {
      const s = token(STRING);
      if (s === undefined) fail('a string is not closed, or has a bad escape or a raw control character');
      return JSON.parse(s!);
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      const n = token(NUMBER);
      if (n === undefined) fail('not a valid number');
      return Number(n);
    }
    const at = i;
    const w = token(WORD);
    if (w === 'true') return true;
    if (w === 'false') return false;
    if (w === 'null') return null;
    if (w !== undefined) {
      fail(`${w} is not a JSON value (strings need double quotes: "${w}")`, at);
    }
    return fail(`expected a value (string, number, object, array, true, false or null), found ${describe()}`);
  };

  const object = (): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    i++; // {
    for (;;) {
      skip();
      if (text[i] === '}') {
        i++;
        return out;
      }
      if (text[i] !== '"') {
        const at = i;
        const w = token(WORD);
        if (w !== undefined) fail(`a property name needs double quotes: "${w}"`, at);
        fail(`expected a property name in double quotes or "}", found ${describe()}`);
      }
      const key = token(STRING);
      if (key === undefined) fail('a property name is not a valid string');
      skip();
      if (text[i] !== ':') fail(`expected ":" after the property name ${key}, found ${describe()}`);
      i++;
      const name = JSON.parse(key!) as string;
      if (Object.prototype.hasOwnProperty.call(out, name)) {
        fail(`property ${key} is given twice in this object`);
      }
      Object.defineProperty(out, name, {
        value: value(),
        enumerable: true,
        writable: true,
        configurable: true,
      });
      skip();
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === '}') continue;
      fail(`expected "," or "}" after the value of ${key}, found ${describe()}`);
    }
  };

  const array = (): unknown[] => {
    const out: unknown[] = [];
    i++; // [
    for (;;) {
      skip();
      if (text[i] === ']') {
        i++;
        return out;
      }
      out.push(value());
      skip();
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === ']') continue;
      fail(`expected "," or "]" after item ${out.length - 1} of the array, found ${describe()}`);
    }
  };

  const v = value();
  skip();
  if (i < text.length) fail(`unexpected ${describe()} after the end of the value`);
  return v;
}
