// A lazy, zero-copy view of JSON text in linear memory: nothing is parsed until asked for, and
// only the part asked for. Envelopes are read through it, so a hook that looks at three fields of
// a request never pays for parsing the (possibly large) body.
//
// The view trusts its input to be JSON (the host only sends valid documents); on malformed input
// accessors return null / NaN / false rather than trapping. Within an object, a key that appears
// twice resolves to its first occurrence.

import { Kind, Value, parseBytes, parseStringAt } from "./json";

// @ts-ignore: decorator
@inline function isWs(c: u32): bool {
  return c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09;
}

export function skipWs(p: usize, end: usize): usize {
  // Test before looping: compact JSON (what the host sends) then never enters the loop, and a
  // loop entry costs a check in deadline mode.
  if (p < end && isWs(<u32>load<u8>(p))) {
    p++;
    while (p < end && isWs(<u32>load<u8>(p))) p++;
  }
  return p;
}

const LO: u64 = 0x0101010101010101;
const HI: u64 = 0x8080808080808080;

// Word-at-a-time scanning. The gateway runs untrusted plugins in deadline mode (wazero's
// CloseOnContextDone), where every loop iteration of the guest costs a check (tens of ns), so
// these functions are written to take as few loop iterations as possible: 8 bytes per step,
// jumps straight to the interesting byte (ctz), and a first step outside the loop.

/** High bit of each zero byte of x; the lowest one is exact (later ones may be false). */
// @ts-ignore: decorator
@inline function zeroBytes(x: u64): u64 {
  return (x - LO) & ~x & HI;
}

// @ts-ignore: decorator
@inline function quoteOrBackslash(w: u64): u64 {
  return zeroBytes(w ^ (LO * 0x22)) | zeroBytes(w ^ (LO * 0x5c));
}

/** Quotes and brackets ('[' and ']' fold onto '{' and '}' with | 0x20). */
// @ts-ignore: decorator
@inline function quoteOrBracket(w: u64): u64 {
  const f = w | (LO * 0x20);
  return zeroBytes(w ^ (LO * 0x22)) | zeroBytes(f ^ (LO * 0x7b)) | zeroBytes(f ^ (LO * 0x7d));
}

/** Bytes that end a number or literal: ',' '}' ']' and whitespace. */
// @ts-ignore: decorator
@inline function delimiters(w: u64): u64 {
  const f = w | (LO * 0x20);
  return zeroBytes(w ^ (LO * 0x2c)) | zeroBytes(f ^ (LO * 0x7d)) | ((w - LO * 0x21) & ~w & HI);
}

/** Set by scanString: whether the last string scanned had escapes. */
export let lastEscaped = false;
/** Set by scanString: whether the last string scanned was all ASCII. */
export let lastAscii = true;

/**
 * Index after the string literal whose opening quote is at `p` (0 when unterminated); sets
 * `lastEscaped` and `lastAscii`.
 */
export function scanString(p: usize, end: usize): usize {
  p++;
  let escaped = false;
  let high: u64 = 0;
  // First word outside the loop: a short string costs no iteration.
  if (p + 8 <= end) {
    const w = load<u64>(p);
    const m = quoteOrBackslash(w);
    if (m == 0) {
      high = w;
      p += 8;
    } else {
      const k = <usize>(ctz(m) >> 3);
      const j = p + k;
      // Bytes before the hit are string content.
      high = k == 0 ? 0 : w & (~(<u64>0) >> ((8 - k) << 3));
      if (load<u8>(j) == 0x22) {
        lastEscaped = false;
        lastAscii = (high & HI) == 0;
        return j + 1;
      }
      escaped = true;
      high |= <u64>load<u8>(j + 1);
      p = j + 2;
    }
  }
  while (p + 8 <= end) {
    const w = load<u64>(p);
    const m = quoteOrBackslash(w);
    if (m == 0) {
      high |= w;
      p += 8;
      continue;
    }
    const k = <usize>(ctz(m) >> 3);
    const j = p + k;
    if (k != 0) high |= w & (~(<u64>0) >> ((8 - k) << 3));
    if (load<u8>(j) == 0x22) {
      lastEscaped = escaped;
      lastAscii = (high & HI) == 0;
      return j + 1;
    }
    escaped = true;
    if (j + 1 < end) high |= <u64>load<u8>(j + 1);
    p = j + 2;
  }
  while (p < end) {
    const c = load<u8>(p);
    if (c == 0x22) {
      lastEscaped = escaped;
      lastAscii = (high & HI) == 0;
      return p + 1;
    }
    if (c == 0x5c) {
      escaped = true;
      p += 2;
      continue;
    }
    high |= <u64>c;
    p++;
  }
  return 0;
}

/** Index after the value starting at `p` (0 on malformed input). No recursion. */
export function skipValue(p: usize, end: usize): usize {
  if (p >= end) return 0;
  const c = load<u8>(p);
  if (c == 0x22) return scanString(p, end);
  if (c == 0x7b || c == 0x5b) {
    let depth = 0;
    let j = p;
    while (j < end) {
      if (j + 8 <= end) {
        const m = quoteOrBracket(load<u64>(j));
        if (m == 0) {
          j += 8;
          continue;
        }
        j += <usize>(ctz(m) >> 3);
      }
      const d = load<u8>(j);
      if (d == 0x22) {
        j = scanString(j, end);
        if (j == 0) return 0;
        continue;
      }
      if (d == 0x7b || d == 0x5b) depth++;
      else if (d == 0x7d || d == 0x5d) {
        depth--;
        if (depth == 0) return j + 1;
      }
      j++;
    }
    return 0;
  }
  let j = p;
  while (j + 8 <= end) {
    const m = delimiters(load<u64>(j));
    if (m != 0) {
      j += <usize>(ctz(m) >> 3);
      return j == p ? 0 : j;
    }
    j += 8;
  }
  while (j < end) {
    const d = <u32>load<u8>(j);
    if (d == 0x2c || d == 0x7d || d == 0x5d || isWs(d)) break;
    j++;
  }
  return j == p ? 0 : j;
}

/** Whether the UTF-8 bytes at p..p+n equal the string `s`, without allocating for ASCII. */
export function bytesEqual(p: usize, n: usize, s: string): bool {
  const len = <usize>s.length;
  // UTF-8 never takes fewer bytes than UTF-16 code units.
  if (n < len) return false;
  if (len == 0) return n == 0;
  // Most mismatches differ at the first character: no loop for them.
  const c0 = <u32>s.charCodeAt(0);
  const b0 = <u32>load<u8>(p);
  if (c0 < 0x80 && b0 < 0x80 && c0 != b0) return false;
  const m = min(n, len);
  for (let k: usize = 0; k < m; k++) {
    const b = <u32>load<u8>(p + k);
    const c = <u32>s.charCodeAt(<i32>k);
    if (b >= 0x80 || c >= 0x80) return String.UTF8.decodeUnsafe(p, n) == s;
    // Equal ASCII prefixes sit at the same offsets in both encodings.
    if (b != c) return false;
  }
  return n == len;
}

/** A JSON value inside a buffer in linear memory, read on demand. */
export class Json {
  constructor(
    /** First byte of the value. */
    public start: usize,
    /** End of the enclosing buffer. */
    public end: usize,
  ) {}

  /** A view of the JSON document at ptr..ptr+len (leading whitespace skipped). */
  static at(ptr: usize, len: usize): Json {
    return new Json(skipWs(ptr, ptr + len), ptr + len);
  }

  /** The value's kind; -1 for malformed input. */
  get kind(): i32 {
    if (this.start >= this.end) return -1;
    const c = <u32>load<u8>(this.start);
    if (c == 0x6e) return Kind.Null;
    if (c == 0x74 || c == 0x66) return Kind.Bool;
    if (c == 0x22) return Kind.String;
    if (c == 0x5b) return Kind.Array;
    if (c == 0x7b) return Kind.Object;
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return Kind.Number;
    return -1;
  }

  isNull(): bool {
    return this.kind == Kind.Null;
  }
  isString(): bool {
    return this.kind == Kind.String;
  }
  isNumber(): bool {
    return this.kind == Kind.Number;
  }
  isArray(): bool {
    return this.kind == Kind.Array;
  }
  isObject(): bool {
    return this.kind == Kind.Object;
  }

  /** Index after the value (0 when malformed). */
  valueEnd(): usize {
    return skipValue(this.start, this.end);
  }

  /** The value's JSON text. */
  raw(): string {
    const e = this.valueEnd();
    return e == 0 ? "" : String.UTF8.decodeUnsafe(this.start, e - this.start);
  }

  asBool(fallback: bool = false): bool {
    const k = this.kind;
    if (k != Kind.Bool) return fallback;
    return load<u8>(this.start) == 0x74;
  }

  /** The number, or `fallback` (NaN) when this is not a number. */
  asNumber(fallback: f64 = NaN): f64 {
    if (this.kind != Kind.Number) return fallback;
    const v = parseBytes(this.start, this.valueEnd() - this.start);
    return v === null ? fallback : v.n;
  }

  /** The string, or null when this is not a string. */
  asString(): string | null {
    if (this.kind != Kind.String) return null;
    const e = scanString(this.start, this.end);
    if (e == 0) return null;
    if (!lastEscaped) return String.UTF8.decodeUnsafe(this.start + 1, e - this.start - 2);
    return parseStringAt(this.start, e);
  }

  /** For a string without escapes: its UTF-8 bytes are at start+1, this many of them; -1 otherwise. */
  rawStringLength(): isize {
    if (this.kind != Kind.String) return -1;
    const e = scanString(this.start, this.end);
    if (e == 0 || lastEscaped) return -1;
    return <isize>(e - this.start - 2);
  }

  /**
   * For an all-ASCII string without escapes: its bytes are at start+1, this many of them; -1
   * otherwise (decode it with asString). Lets a plugin search text in place.
   */
  rawAsciiLength(): isize {
    if (this.kind != Kind.String) return -1;
    const e = scanString(this.start, this.end);
    if (e == 0 || lastEscaped || !lastAscii) return -1;
    return <isize>(e - this.start - 2);
  }

  /** Whether this is a string equal to `s` (no allocation for ASCII without escapes). */
  strEq(s: string): bool {
    if (this.kind != Kind.String) return false;
    const e = scanString(this.start, this.end);
    if (e == 0) return false;
    if (!lastEscaped) return bytesEqual(this.start + 1, e - this.start - 2, s);
    const d = parseStringAt(this.start, e);
    return d !== null && d == s;
  }

  /** The elements of an array (empty for other kinds). */
  items(): Json[] {
    const out: Json[] = [];
    if (this.kind != Kind.Array) return out;
    let p = skipWs(this.start + 1, this.end);
    if (p < this.end && load<u8>(p) == 0x5d) return out;
    while (p < this.end) {
      const e = skipValue(p, this.end);
      if (e == 0) break;
      out.push(new Json(p, this.end));
      const q = skipWs(e, this.end);
      if (q >= this.end || load<u8>(q) != 0x2c) break;
      p = skipWs(q + 1, this.end);
    }
    return out;
  }

  /** Element i of an array. */
  at(i: i32): Json | null {
    if (this.kind != Kind.Array || i < 0) return null;
    let p = skipWs(this.start + 1, this.end);
    if (p < this.end && load<u8>(p) == 0x5d) return null;
    let n = 0;
    while (p < this.end) {
      const e = skipValue(p, this.end);
      if (e == 0) return null;
      if (n == i) return new Json(p, this.end);
      n++;
      const q = skipWs(e, this.end);
      if (q >= this.end || load<u8>(q) != 0x2c) return null;
      p = skipWs(q + 1, this.end);
    }
    return null;
  }

  /** Number of elements (array) or members (object). */
  get length(): i32 {
    const k = this.kind;
    if (k == Kind.Array) return this.items().length;
    if (k == Kind.Object) {
      const c = new Members(this);
      let n = 0;
      while (c.next()) n++;
      return n;
    }
    return 0;
  }

  /** The member `key` of an object (first occurrence). */
  get(key: string): Json | null {
    const v = memberValue(this.start, this.end, key);
    return v == 0 ? null : new Json(v, this.end);
  }

  /** The keys of an object, in document order. */
  keys(): string[] {
    const out: string[] = [];
    if (this.kind != Kind.Object) return out;
    const c = new Members(this);
    while (c.next()) {
      const k = c.key();
      if (k !== null) out.push(k);
    }
    return out;
  }

  /** Whether this is an array with a string element equal to `s`. */
  containsString(s: string): bool {
    if (this.kind != Kind.Array) return false;
    let p = skipWs(this.start + 1, this.end);
    while (p < this.end) {
      const c = load<u8>(p);
      if (c == 0x5d) return false;
      const e = skipValue(p, this.end);
      if (e == 0) return false;
      if (c == 0x22 && new Json(p, this.end).strEq(s)) return true;
      const q = skipWs(e, this.end);
      if (q >= this.end || load<u8>(q) != 0x2c) return false;
      p = skipWs(q + 1, this.end);
    }
    return false;
  }

  /** The string elements of an array. */
  stringItems(): string[] {
    const out: string[] = [];
    const items = this.items();
    for (let i = 0; i < items.length; i++) {
      const s = items[i].asString();
      if (s !== null) out.push(s);
    }
    return out;
  }

  /** Parses this value (and everything in it) into a Value tree; null when malformed. */
  toValue(): Value | null {
    const e = this.valueEnd();
    if (e == 0) return null;
    return parseBytes(this.start, e - this.start);
  }
}

/** Start of the member `key`'s value in the object at `obj` (0 when absent); no allocation. */
export function memberValue(obj: usize, end: usize, key: string): usize {
  if (obj >= end || load<u8>(obj) != 0x7b) return 0;
  let p = skipWs(obj + 1, end);
  while (p < end && load<u8>(p) == 0x22) {
    const ke = scanString(p, end);
    if (ke == 0) return 0;
    const escaped = lastEscaped;
    const c = skipWs(ke, end);
    if (c >= end || load<u8>(c) != 0x3a) return 0;
    const v = skipWs(c + 1, end);
    let hit: bool;
    if (!escaped) hit = bytesEqual(p + 1, ke - p - 2, key);
    else {
      const d = parseStringAt(p, ke);
      hit = d !== null && d == key;
    }
    if (hit) return v;
    const ve = skipValue(v, end);
    if (ve == 0) return 0;
    const q = skipWs(ve, end);
    if (q >= end || load<u8>(q) != 0x2c) return 0;
    p = skipWs(q + 1, end);
  }
  return 0;
}

/**
 * From just after a member's value inside an object, the index after the object's closing brace
 * (0 when malformed): skips the remaining members.
 */
export function objectEndFrom(p: usize, end: usize): usize {
  p = skipWs(p, end);
  while (p < end) {
    const c = load<u8>(p);
    if (c == 0x7d) return p + 1;
    if (c != 0x2c) return 0;
    p = skipWs(p + 1, end);
    if (p >= end || load<u8>(p) != 0x22) return 0;
    const ke = scanString(p, end);
    if (ke == 0) return 0;
    p = skipWs(ke, end);
    if (p >= end || load<u8>(p) != 0x3a) return 0;
    const ve = skipValue(skipWs(p + 1, end), end);
    if (ve == 0) return 0;
    p = skipWs(ve, end);
  }
  return 0;
}

/** From just after an array element, the start of the next one (0 after the last; see nextItem). */
export function itemAfter(e: usize, end: usize): usize {
  lastArrayEnd = 0;
  const q = skipWs(e, end);
  if (q < end && load<u8>(q) == 0x2c) return skipWs(q + 1, end);
  if (q < end && load<u8>(q) == 0x5d) lastArrayEnd = q + 1;
  return 0;
}

/** Start of the first element of the array at `arr` (0 when empty or not an array). */
export function firstItem(arr: usize, end: usize): usize {
  if (arr >= end || load<u8>(arr) != 0x5b) return 0;
  const p = skipWs(arr + 1, end);
  return p < end && load<u8>(p) != 0x5d ? p : 0;
}

/** See nextItem. */
export let lastArrayEnd: usize = 0;

/**
 * Start of the element after the one at `item` (0 after the last). `lastArrayEnd` is set to the
 * index after the closing bracket when the last element is passed.
 */
export function nextItem(item: usize, end: usize): usize {
  lastArrayEnd = 0;
  const e = skipValue(item, end);
  if (e == 0) return 0;
  const q = skipWs(e, end);
  if (q < end && load<u8>(q) == 0x2c) return skipWs(q + 1, end);
  if (q < end && load<u8>(q) == 0x5d) lastArrayEnd = q + 1;
  return 0;
}

/**
 * A cursor over an object's members: `while (c.next()) { c.keyEquals(..); c.value() }`. A member's
 * value is skipped only when moving past it, so finding a key never scans that key's value.
 */
export class Members {
  /** Where the next member's key starts (0 when done). */
  private p: usize = 0;
  private end: usize;
  /** The current member's value, not skipped yet (0 when none). */
  private pending: usize = 0;
  keyStart: usize = 0;
  keyEnd: usize = 0;
  keyEscaped: bool = false;
  valueStart: usize = 0;

  constructor(obj: Json) {
    this.end = obj.end;
    if (obj.kind == Kind.Object) {
      const p = skipWs(obj.start + 1, obj.end);
      if (p < obj.end && load<u8>(p) == 0x22) this.p = p;
    }
  }

  /** Moves to the next member; false when there is none. */
  next(): bool {
    const end = this.end;
    if (this.pending != 0) {
      const ve = skipValue(this.pending, end);
      this.pending = 0;
      if (ve == 0) return false;
      const q = skipWs(ve, end);
      if (q < end && load<u8>(q) == 0x2c) this.p = skipWs(q + 1, end);
    }
    const p = this.p;
    if (p == 0) return false;
    this.p = 0;
    if (p >= end || load<u8>(p) != 0x22) return false;
    const ke = scanString(p, end);
    if (ke == 0) return false;
    this.keyEscaped = lastEscaped;
    const c = skipWs(ke, end);
    if (c >= end || load<u8>(c) != 0x3a) return false;
    const v = skipWs(c + 1, end);
    if (v >= end) return false;
    this.keyStart = p;
    this.keyEnd = ke;
    this.valueStart = v;
    this.pending = v;
    return true;
  }

  /** Tells the cursor where the current value ends, when the caller found out (saves a scan). */
  valueEndsAt(valueEnd: usize): void {
    if (this.pending == 0 || valueEnd == 0) return;
    this.pending = 0;
    const q = skipWs(valueEnd, this.end);
    if (q < this.end && load<u8>(q) == 0x2c) this.p = skipWs(q + 1, this.end);
  }

  keyEquals(s: string): bool {
    if (!this.keyEscaped) return bytesEqual(this.keyStart + 1, this.keyEnd - this.keyStart - 2, s);
    const d = parseStringAt(this.keyStart, this.keyEnd);
    return d !== null && d == s;
  }

  key(): string | null {
    if (!this.keyEscaped) return String.UTF8.decodeUnsafe(this.keyStart + 1, this.keyEnd - this.keyStart - 2);
    return parseStringAt(this.keyStart, this.keyEnd);
  }

  value(): Json {
    return new Json(this.valueStart, this.end);
  }
}
