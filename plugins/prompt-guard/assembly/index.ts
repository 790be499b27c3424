// prompt-guard: rejects a request whose prompt text contains a banned phrase (case-insensitive).
//
// Config: {"banned":["ignore previous instructions", ...], "status":400, "code":"prompt_rejected"}
// Result on a match: {"action":"reject","reject":{"status":400,"code":"prompt_rejected",
//   "message":"prompt contains a banned phrase"},"labels":["prompt-guard:blocked"]}.
// Otherwise 0 (continue, no changes).
//
// Speed: texts are read in place from the envelope. An ASCII text without JSON escapes (the common
// case) is searched byte by byte with ASCII case folding, without decoding it; any other text is
// decoded, lower-cased (full Unicode) and searched.

import { Envelope, Kind, Output, Text, Value, handle, handleConfig } from "../../../sdk/assemblyscript/assembly";
export { gw_abi_v1, gw_alloc, gw_free } from "../../../sdk/assemblyscript/assembly";

const MESSAGE = "prompt contains a banned phrase";

// Config, set by gw_on_config (globals are GC roots, so they survive the per-call collection).
let banned: string[] = []; // lower-cased
let asciiPhrases: StaticArray<u8>[] = []; // the ASCII ones, as bytes
let asciiSkips: StaticArray<u8>[] = []; // their Boyer-Moore-Horspool shift tables
let status: i32 = 400;
let code: string = "prompt_rejected";

function isAsciiString(s: string): bool {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false;
  return true;
}

function configure(cfg: Value): Output | null {
  banned = [];
  asciiPhrases = [];
  asciiSkips = [];
  status = 400;
  code = "prompt_rejected";
  if (cfg.isNull()) return null;
  if (!cfg.isObject()) return Output.error("prompt-guard: config must be an object");
  const list = cfg.get("banned");
  if (list !== null && !list.isNull()) {
    if (!list.isArray()) return Output.error("prompt-guard: banned must be an array of strings");
    for (let i = 0; i < list.items.length; i++) {
      const p = list.items[i];
      if (p.kind != Kind.String) return Output.error("prompt-guard: banned must be an array of strings");
      // An empty phrase would match everything: ignore it.
      if (p.s.length == 0) continue;
      const lower = p.s.toLowerCase();
      banned.push(lower);
      if (isAsciiString(lower)) {
        const b = new StaticArray<u8>(lower.length);
        for (let k = 0; k < lower.length; k++) b[k] = <u8>lower.charCodeAt(k);
        asciiPhrases.push(b);
        // Shift by the distance from a byte's last occurrence (before the end) to the end.
        const m = b.length;
        const skip = new StaticArray<u8>(256);
        for (let c = 0; c < 256; c++) skip[c] = <u8>min(m, 255);
        for (let k = 0; k < m - 1; k++) skip[b[k]] = <u8>min(m - 1 - k, 255);
        asciiSkips.push(skip);
      }
    }
  }
  const st = cfg.get("status");
  if (st !== null && !st.isNull()) {
    if (!st.isNumber() || st.n != Math.floor(st.n) || st.n < 400 || st.n > 599) {
      return Output.error("prompt-guard: status must be an integer from 400 to 599");
    }
    status = <i32>st.n;
  }
  const c = cfg.getString("code");
  if (c !== null && c.length > 0) code = c;
  return null;
}

// @ts-ignore: decorator
@inline function fold(c: u32): u32 {
  return c - 0x41 < 26 ? c | 0x20 : c;
}

/**
 * ASCII case-insensitive search of the ASCII phrases in n bytes at p: Boyer-Moore-Horspool on
 * folded bytes, so a 1 KiB text is read in steps of about a phrase's length.
 */
function asciiSearch(p: usize, n: usize): bool {
  const phrases = asciiPhrases;
  for (let j = 0; j < phrases.length; j++) {
    const ph = unchecked(phrases[j]);
    const skip = unchecked(asciiSkips[j]);
    const m = <usize>ph.length;
    if (m > n) continue;
    const last = <u32>unchecked(ph[<i32>(m - 1)]);
    let i: usize = 0;
    while (i + m <= n) {
      const c = fold(<u32>load<u8>(p + i + m - 1));
      if (c == last) {
        let k = <isize>m - 2;
        while (k >= 0 && fold(<u32>load<u8>(p + i + <usize>k)) == <u32>unchecked(ph[<i32>k])) k--;
        if (k < 0) return true;
      }
      i += <usize>unchecked(skip[c]);
    }
  }
  return false;
}

function textMatches(t: Text): bool {
  const n = t.asciiLength;
  if (n >= 0) return asciiSearch(t.start + 1, <usize>n);
  const s = t.text;
  const lower = s.toLowerCase();
  for (let j = 0; j < banned.length; j++) {
    if (lower.includes(unchecked(banned[j]))) return true;
  }
  return false;
}

function check(env: Envelope): Output | null {
  if (banned.length == 0) return null;
  const texts = env.texts(false);
  for (let i = 0; i < texts.length; i++) {
    if (textMatches(texts[i])) {
      return Output.reject(status, code, MESSAGE).label("prompt-guard:blocked");
    }
  }
  return null;
}

export function gw_on_config(ptr: usize, len: usize): u64 {
  return handleConfig(ptr, len, configure);
}

export function gw_on_request(ptr: usize, len: usize): u64 {
  return handle(ptr, len, check);
}
