// A small JSON value type with a strict parser (RFC 8259) that reads UTF-8 bytes straight from
// linear memory, and a serializer that writes UTF-8 into an unmanaged buffer (the result document
// handed to the host). Numbers are f64; objects keep their key order; a duplicated key resolves
// to its last occurrence (like Go's encoding/json).

/** Nesting deeper than this is a parse error. */
export const MAX_DEPTH: i32 = 128;

export enum Kind {
  Null = 0,
  Bool = 1,
  Number = 2,
  String = 3,
  Array = 4,
  Object = 5,
}

/** A JSON value: one class with a kind tag (AssemblyScript has no sum types). */
export class Value {
  kind: Kind = Kind.Null;
  b: bool = false;
  n: f64 = 0;
  s: string = "";
  /** Array elements, or object values (parallel to `keys`). */
  items: Value[] = [];
  /** Object keys. */
  keys: string[] = [];

  static null(): Value {
    return new Value();
  }
  static bool(b: bool): Value {
    const v = new Value();
    v.kind = Kind.Bool;
    v.b = b;
    return v;
  }
  static number(n: f64): Value {
    const v = new Value();
    v.kind = Kind.Number;
    v.n = n;
    return v;
  }
  static string(s: string): Value {
    const v = new Value();
    v.kind = Kind.String;
    v.s = s;
    return v;
  }
  static array(): Value {
    const v = new Value();
    v.kind = Kind.Array;
    return v;
  }
  static object(): Value {
    const v = new Value();
    v.kind = Kind.Object;
    return v;
  }
  /** An array of strings. */
  static strings(list: string[]): Value {
    const v = Value.array();
    for (let i = 0; i < list.length; i++) v.items.push(Value.string(list[i]));
    return v;
  }

  isNull(): bool {
    return this.kind == Kind.Null;
  }
  isBool(): bool {
    return this.kind == Kind.Bool;
  }
  isNumber(): bool {
    return this.kind == Kind.Number;
  }
  isString(): bool {
    return this.kind == Kind.String;
  }
  isArray(): bool {
    return this.kind == Kind.Array;
  }
  isObject(): bool {
    return this.kind == Kind.Object;
  }

  /** Number of array elements or object members. */
  get length(): i32 {
    return this.kind == Kind.Array || this.kind == Kind.Object ? this.items.length : 0;
  }

  /** The member `key` of an object (null when missing or not an object). */
  get(key: string): Value | null {
    if (this.kind != Kind.Object) return null;
    const keys = this.keys;
    for (let i = keys.length - 1; i >= 0; i--) {
      if (unchecked(keys[i]) == key) return unchecked(this.items[i]);
    }
    return null;
  }

  has(key: string): bool {
    return this.get(key) !== null;
  }

  /** Element `i` of an array. */
  at(i: i32): Value | null {
    if (this.kind != Kind.Array || i < 0 || i >= this.items.length) return null;
    return unchecked(this.items[i]);
  }

  /** The string member `key`, or null. */
  getString(key: string): string | null {
    const v = this.get(key);
    if (v === null || v.kind != Kind.String) return null;
    return v.s;
  }

  /** The number member `key`, or `fallback`. */
  getNumber(key: string, fallback: f64 = NaN): f64 {
    const v = this.get(key);
    if (v === null || v.kind != Kind.Number) return fallback;
    return v.n;
  }

  /** The boolean member `key`, or `fallback`. */
  getBool(key: string, fallback: bool = false): bool {
    const v = this.get(key);
    if (v === null || v.kind != Kind.Bool) return fallback;
    return v.b;
  }

  /** Whether this is an array with a string element equal to `s`. */
  containsString(s: string): bool {
    if (this.kind != Kind.Array) return false;
    const items = this.items;
    for (let i = 0; i < items.length; i++) {
      const it = unchecked(items[i]);
      if (it.kind == Kind.String && it.s == s) return true;
    }
    return false;
  }

  /** The string elements of an array (others skipped). */
  stringItems(): string[] {
    const out: string[] = [];
    if (this.kind != Kind.Array) return out;
    for (let i = 0; i < this.items.length; i++) {
      const it = unchecked(this.items[i]);
      if (it.kind == Kind.String) out.push(it.s);
    }
    return out;
  }

  /** Sets `key` on an object (replacing an existing member); returns this for chaining. */
  set(key: string, v: Value): Value {
    if (this.kind != Kind.Object) return this;
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (unchecked(this.keys[i]) == key) {
        this.items[i] = v;
        return this;
      }
    }
    this.keys.push(key);
    this.items.push(v);
    return this;
  }
  setString(key: string, s: string): Value {
    return this.set(key, Value.string(s));
  }
  setNumber(key: string, n: f64): Value {
    return this.set(key, Value.number(n));
  }
  setBool(key: string, b: bool): Value {
    return this.set(key, Value.bool(b));
  }

  /** Appends to an array; returns this. */
  push(v: Value): Value {
    if (this.kind == Kind.Array) this.items.push(v);
    return this;
  }

  /** Follows an RFC 6901 JSON pointer ("" is this value). */
  pointer(ptr: string): Value | null {
    if (ptr.length == 0) return this;
    if (ptr.charCodeAt(0) != 0x2f) return null;
    const tokens = ptr.substring(1).split("/");
    let cur: Value = this;
    for (let i = 0; i < tokens.length; i++) {
      const tok = tokens[i].replaceAll("~1", "/").replaceAll("~0", "~");
      let next: Value | null = null;
      if (cur.kind == Kind.Object) {
        next = cur.get(tok);
      } else if (cur.kind == Kind.Array) {
        if (tok.length == 0 || (tok.length > 1 && tok.charCodeAt(0) == 0x30)) return null;
        let idx = 0;
        for (let j = 0; j < tok.length; j++) {
          const c = tok.charCodeAt(j);
          if (c < 0x30 || c > 0x39 || idx > 100000000) return null;
          idx = idx * 10 + (c - 0x30);
        }
        next = cur.at(idx);
      }
      if (next === null) return null;
      cur = next;
    }
    return cur;
  }

  /** Compact serialization. */
  toString(): string {
    const buf = new ByteBuf(64);
    writeValue(buf, this);
    const s = String.UTF8.decodeUnsafe(buf.ptr, buf.len);
    buf.free();
    return s;
  }
}

/** A growable UTF-8 byte buffer in unmanaged memory (heap.alloc), freed with heap.free. */
export class ByteBuf {
  ptr: usize;
  len: usize = 0;
  cap: usize;

  constructor(cap: usize = 256) {
    this.cap = cap;
    this.ptr = heap.alloc(cap);
  }

  @inline reserve(n: usize): void {
    if (this.len + n > this.cap) this.grow(n);
  }

  private grow(n: usize): void {
    let cap = this.cap << 1;
    while (cap < this.len + n) cap <<= 1;
    this.ptr = heap.realloc(this.ptr, cap);
    this.cap = cap;
  }

  @inline byte(b: u32): void {
    this.reserve(1);
    store<u8>(this.ptr + this.len, <u8>b);
    this.len++;
  }

  /** Appends an ASCII-only string. */
  ascii(s: string): void {
    const n = <usize>s.length;
    this.reserve(n + 4);
    const src = changetype<usize>(s);
    let i: usize = 0;
    // Four UTF-16 units per step (bytes past n are overwritten or ignored).
    while (i < n) {
      const w = load<u64>(src + (i << 1));
      store<u32>(this.ptr + this.len + i, <u32>((w & 0xff) | ((w >> 8) & 0xff00) | ((w >> 16) & 0xff0000) | ((w >> 24) & 0xff000000)));
      i += 4;
    }
    this.len += n;
  }

  /** Releases the buffer (not needed when it was handed to the host). */
  free(): void {
    heap.free(this.ptr);
    this.ptr = 0;
    this.len = 0;
    this.cap = 0;
  }
}

const HEX = "0123456789abcdef";

/** Writes `s` as a JSON string literal (UTF-16 to UTF-8, with the mandatory escapes). */
export function writeString(buf: ByteBuf, s: string): void {
  const n = s.length;
  buf.reserve(<usize>n + 2);
  buf.byte(0x22);
  const src = changetype<usize>(s);
  for (let i = 0; i < n; i++) {
    // Four UTF-16 units per step when they are plain ASCII (no quote, backslash or control).
    if (i + 4 <= n) {
      const w = load<u64>(src + (<usize>i << 1));
      const L: u64 = 0x0001000100010001;
      const H: u64 = 0x8000800080008000;
      const special = ((w ^ (L * 0x22)) - L) & ~(w ^ (L * 0x22)) & H
        | ((w ^ (L * 0x5c)) - L) & ~(w ^ (L * 0x5c)) & H
        | (w - L * 0x20) & ~w & H;
      if ((w & 0xff80ff80ff80ff80) == 0 && special == 0) {
        buf.reserve(4);
        store<u32>(buf.ptr + buf.len, <u32>((w & 0xff) | ((w >> 8) & 0xff00) | ((w >> 16) & 0xff0000) | ((w >> 24) & 0xff000000)));
        buf.len += 4;
        i += 3;
        continue;
      }
    }
    let c = <u32>s.charCodeAt(i);
    if (c < 0x80) {
      if (c == 0x22 || c == 0x5c) {
        buf.byte(0x5c);
        buf.byte(c);
      } else if (c >= 0x20) {
        buf.byte(c);
      } else if (c == 0x0a) {
        buf.byte(0x5c);
        buf.byte(0x6e);
      } else if (c == 0x0d) {
        buf.byte(0x5c);
        buf.byte(0x72);
      } else if (c == 0x09) {
        buf.byte(0x5c);
        buf.byte(0x74);
      } else if (c == 0x08) {
        buf.byte(0x5c);
        buf.byte(0x62);
      } else if (c == 0x0c) {
        buf.byte(0x5c);
        buf.byte(0x66);
      } else {
        buf.ascii("\\u00");
        buf.byte(HEX.charCodeAt(c >> 4));
        buf.byte(HEX.charCodeAt(c & 15));
      }
    } else if (c < 0x800) {
      buf.byte(0xc0 | (c >> 6));
      buf.byte(0x80 | (c & 0x3f));
    } else {
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < n) {
        const lo = <u32>s.charCodeAt(i + 1);
        if (lo >= 0xdc00 && lo < 0xe000) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
          buf.byte(0xf0 | (cp >> 18));
          buf.byte(0x80 | ((cp >> 12) & 0x3f));
          buf.byte(0x80 | ((cp >> 6) & 0x3f));
          buf.byte(0x80 | (cp & 0x3f));
          i++;
          continue;
        }
      }
      if (c >= 0xd800 && c < 0xe000) c = 0xfffd; // lone surrogate: not encodable in UTF-8
      buf.byte(0xe0 | (c >> 12));
      buf.byte(0x80 | ((c >> 6) & 0x3f));
      buf.byte(0x80 | (c & 0x3f));
    }
  }
  buf.byte(0x22);
}

/** Writes a number the way JavaScript would; NaN and ±Infinity become null. */
export function writeNumber(buf: ByteBuf, n: f64): void {
  if (!isFinite(n)) {
    buf.ascii("null");
  } else if (n == Math.floor(n) && Math.abs(n) < 9007199254740992.0) {
    buf.ascii((<i64>n).toString());
  } else {
    buf.ascii(n.toString());
  }
}

export function writeValue(buf: ByteBuf, v: Value): void {
  switch (v.kind) {
    case Kind.Null:
      buf.ascii("null");
      break;
    case Kind.Bool:
      buf.ascii(v.b ? "true" : "false");
      break;
    case Kind.Number:
      writeNumber(buf, v.n);
      break;
    case Kind.String:
      writeString(buf, v.s);
      break;
    case Kind.Array: {
      buf.byte(0x5b);
      const items = v.items;
      for (let i = 0; i < items.length; i++) {
        if (i > 0) buf.byte(0x2c);
        writeValue(buf, unchecked(items[i]));
      }
      buf.byte(0x5d);
      break;
    }
    case Kind.Object: {
      buf.byte(0x7b);
      const keys = v.keys;
      for (let i = 0; i < keys.length; i++) {
        if (i > 0) buf.byte(0x2c);
        writeString(buf, unchecked(keys[i]));
        buf.byte(0x3a);
        writeValue(buf, unchecked(v.items[i]));
      }
      buf.byte(0x7d);
      break;
    }
  }
}

/** Why the last parse failed ("" after a success). */
export let lastError: string = "";

/** Parses JSON text. Returns null on invalid input (see `lastError`). */
export function parse(text: string): Value | null {
  const buf = String.UTF8.encode(text);
  return parseBytes(changetype<usize>(buf), <usize>buf.byteLength);
}

/** Parses UTF-8 JSON from linear memory. Returns null on invalid input (see `lastError`). */
export function parseBytes(ptr: usize, len: usize): Value | null {
  const p = new Parser(ptr, ptr + len);
  lastError = "";
  p.ws();
  const v = p.value();
  if (v === null) {
    lastError = p.err + " at byte " + (p.i - ptr).toString();
    return null;
  }
  p.ws();
  if (p.i != p.end) {
    lastError = "trailing characters at byte " + (p.i - ptr).toString();
    return null;
  }
  return v;
}

/** Decodes the string literal whose opening quote is at `start` (null when malformed). */
export function parseStringAt(start: usize, end: usize): string | null {
  return new Parser(start, end).string();
}

class Parser {
  i: usize;
  end: usize;
  depth: i32 = 0;
  err: string = "";

  constructor(start: usize, end: usize) {
    this.i = start;
    this.end = end;
  }

  @inline peek(): u32 {
    return this.i < this.end ? <u32>load<u8>(this.i) : 0xffffffff;
  }

  fail(msg: string): Value | null {
    if (this.err.length == 0) this.err = msg;
    return null;
  }

  ws(): void {
    while (this.i < this.end) {
      const c = load<u8>(this.i);
      if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
      this.i++;
    }
  }

  lit(word: string, v: Value): Value | null {
    const n = <usize>word.length;
    if (this.i + n > this.end) return this.fail("invalid literal");
    for (let k: usize = 0; k < n; k++) {
      if (<u32>load<u8>(this.i + k) != <u32>word.charCodeAt(<i32>k)) return this.fail("invalid literal");
    }
    this.i += n;
    return v;
  }

  value(): Value | null {
    const c = this.peek();
    if (c == 0x7b) return this.object();
    if (c == 0x5b) return this.array();
    if (c == 0x22) {
      const s = this.string();
      if (s === null) return null;
      return Value.string(s);
    }
    if (c == 0x74) return this.lit("true", Value.bool(true));
    if (c == 0x66) return this.lit("false", Value.bool(false));
    if (c == 0x6e) return this.lit("null", Value.null());
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (c == 0xffffffff) return this.fail("unexpected end of input");
    return this.fail("unexpected character");
  }

  object(): Value | null {
    if (++this.depth > MAX_DEPTH) return this.fail("nesting too deep");
    this.i++;
    this.ws();
    const obj = Value.object();
    if (this.peek() == 0x7d) {
      this.i++;
      this.depth--;
      return obj;
    }
    while (true) {
      if (this.peek() != 0x22) return this.fail("expected a string key");
      const k = this.string();
      if (k === null) return null;
      this.ws();
      if (this.peek() != 0x3a) return this.fail("expected ':'");
      this.i++;
      this.ws();
      const v = this.value();
      if (v === null) return null;
      obj.keys.push(k);
      obj.items.push(v);
      this.ws();
      const c = this.peek();
      if (c == 0x2c) {
        this.i++;
        this.ws();
      } else if (c == 0x7d) {
        this.i++;
        this.depth--;
        return obj;
      } else {
        return this.fail("expected ',' or '}'");
      }
    }
    return null;
  }

  array(): Value | null {
    if (++this.depth > MAX_DEPTH) return this.fail("nesting too deep");
    this.i++;
    this.ws();
    const arr = Value.array();
    if (this.peek() == 0x5d) {
      this.i++;
      this.depth--;
      return arr;
    }
    while (true) {
      const v = this.value();
      if (v === null) return null;
      arr.items.push(v);
      this.ws();
      const c = this.peek();
      if (c == 0x2c) {
        this.i++;
        this.ws();
      } else if (c == 0x5d) {
        this.i++;
        this.depth--;
        return arr;
      } else {
        return this.fail("expected ',' or ']'");
      }
    }
    return null;
  }

  digits(): i32 {
    let n = 0;
    while (this.i < this.end) {
      const c = load<u8>(this.i);
      if (c < 0x30 || c > 0x39) break;
      this.i++;
      n++;
    }
    return n;
  }

  number(): Value | null {
    const start = this.i;
    let neg = false;
    if (this.peek() == 0x2d) {
      neg = true;
      this.i++;
    }
    const c = this.peek();
    let intDigits = 0;
    if (c == 0x30) {
      this.i++;
      intDigits = 1;
    } else if (c >= 0x31 && c <= 0x39) {
      intDigits = this.digits();
    } else {
      return this.fail("invalid number");
    }
    let simple = true;
    if (this.peek() == 0x2e) {
      simple = false;
      this.i++;
      if (this.digits() == 0) return this.fail("invalid number");
    }
    const e = this.peek();
    if (e == 0x65 || e == 0x45) {
      simple = false;
      this.i++;
      const s = this.peek();
      if (s == 0x2b || s == 0x2d) this.i++;
      if (this.digits() == 0) return this.fail("invalid number");
    }
    if (simple && intDigits <= 15) {
      // Fast path: a plain integer that f64 holds exactly.
      let n: i64 = 0;
      for (let p = start + (neg ? 1 : 0); p < this.i; p++) n = n * 10 + <i64>(load<u8>(p) - 0x30);
      return Value.number(neg ? -<f64>n : <f64>n);
    }
    return Value.number(parseFloat(String.UTF8.decodeUnsafe(start, this.i - start)));
  }

  hex4(): i32 {
    if (this.i + 4 > this.end) return -1;
    let n = 0;
    for (let k = 0; k < 4; k++) {
      const c = <i32>load<u8>(this.i);
      let d: i32;
      if (c >= 0x30 && c <= 0x39) d = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
      else return -1;
      n = n * 16 + d;
      this.i++;
    }
    return n;
  }

  /** Parses a string literal starting at the opening quote. */
  string(): string | null {
    this.i++;
    let segStart = this.i;
    let out = "";
    let escaped = false;
    while (true) {
      if (this.i >= this.end) {
        this.fail("unterminated string");
        return null;
      }
      const c = load<u8>(this.i);
      if (c == 0x22) {
        const seg = String.UTF8.decodeUnsafe(segStart, this.i - segStart);
        this.i++;
        return escaped ? out + seg : seg;
      }
      if (c < 0x20) {
        this.fail("control character in string");
        return null;
      }
      if (c != 0x5c) {
        this.i++;
        continue;
      }
      // An escape: flush the plain segment before it.
      out += String.UTF8.decodeUnsafe(segStart, this.i - segStart);
      escaped = true;
      this.i++;
      if (this.i >= this.end) {
        this.fail("unterminated string");
        return null;
      }
      const e = load<u8>(this.i);
      this.i++;
      if (e == 0x22) out += '"';
      else if (e == 0x5c) out += "\\";
      else if (e == 0x2f) out += "/";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75) {
        const cp = this.hex4();
        if (cp < 0) {
          this.fail("invalid \\u escape");
          return null;
        }
        if (cp >= 0xd800 && cp < 0xdc00) {
          if (this.i + 1 < this.end && load<u8>(this.i) == 0x5c && load<u8>(this.i + 1) == 0x75) {
            this.i += 2;
            const lo = this.hex4();
            if (lo < 0xdc00 || lo >= 0xe000) {
              this.fail("invalid surrogate pair");
              return null;
            }
            out += String.fromCharCode(cp, lo);
          } else {
            this.fail("lone surrogate");
            return null;
          }
        } else if (cp >= 0xdc00 && cp < 0xe000) {
          this.fail("lone surrogate");
          return null;
        } else {
          out += String.fromCharCode(cp);
        }
      } else {
        this.fail("invalid escape");
        return null;
      }
      segStart = this.i;
    }
    return null;
  }
}
