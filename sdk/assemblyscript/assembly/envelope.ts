// Input envelopes (ABI §3): typed accessors over a lazy view of the envelope JSON. Nothing is
// parsed until asked for: top-level members are indexed on first use, one by one, so reading
// `headers` or `tags` never scans the body that the host sends after them. Unknown fields stay
// reachable with `get`, so fields added within ABI v1 never break a plugin.

import { Kind, Value } from "./json";
import { bytesEqual, firstItem, itemAfter, Json, lastArrayEnd, lastAscii, lastEscaped, memberValue, Members, nextItem, objectEndFrom, scanString } from "./view";
import { parseStringAt } from "./json";

/** A piece of prompt text: its JSON pointer (relative to the body, as patches are) and its value. */
export class Text {
  /**
   * For an all-ASCII text without escapes, its length: the bytes are at start+1 and can be
   * searched in place. -1 otherwise (use `text`).
   */
  asciiLength: isize;

  constructor(
    public path: string,
    /** Start of the string literal in the envelope buffer. */
    public start: usize,
    public end: usize,
    /** Index after the literal. */
    public literalEnd: usize,
  ) {
    this.asciiLength = literalEnd != 0 && !lastEscaped && lastAscii ? <isize>(literalEnd - start - 2) : -1;
  }

  /** A view of the string. */
  get value(): Json {
    return new Json(this.start, this.end);
  }

  /** The decoded text. */
  get text(): string {
    const s = this.value.asString();
    return s === null ? "" : s;
  }
}

/** A Text for the string literal at p (scanned once, here). */
function textAt(path: string, p: usize, end: usize): Text {
  return new Text(path, p, end, scanString(p, end));
}

// The index of top-level members lives in static memory, reused by every call (an Envelope is
// only valid during the hook call that received it): no allocation per member. Four words per
// member: key start, key end, key escaped, value start. Members past MAX_INDEXED are found by
// scanning without being cached.
const MAX_INDEXED = 64;
const INDEX: usize = memory.data(MAX_INDEXED * 4 * sizeof<usize>());
/** The Envelope that owns INDEX (the latest one created); older ones scan without caching. */
let indexOwner: u32 = 0;

export class Envelope {
  root: Json;
  /** Members indexed so far. */
  private count: i32 = 0;
  private rest: Members;
  private owner: u32;

  constructor(root: Json) {
    this.root = root;
    this.rest = new Members(root);
    this.owner = ++indexOwner;
  }

  /** A view of the envelope at ptr..ptr+len. */
  static at(ptr: usize, len: usize): Envelope {
    return new Envelope(Json.at(ptr, len));
  }

  /** Start of the top-level member `key`'s value; 0 when absent. */
  valueStart(key: string): usize {
    if (this.owner != indexOwner) {
      // Another Envelope was created since: INDEX is not ours any more.
      const c = new Members(this.root);
      while (c.next()) if (c.keyEquals(key)) return c.valueStart;
      return 0;
    }
    const n = this.count;
    for (let i = 0; i < n; i++) {
      const e = INDEX + <usize>i * 4 * sizeof<usize>();
      const ks = load<usize>(e);
      const ke = load<usize>(e, sizeof<usize>());
      if (load<usize>(e, 2 * sizeof<usize>()) == 0) {
        if (bytesEqual(ks + 1, ke - ks - 2, key)) return load<usize>(e, 3 * sizeof<usize>());
      } else {
        const d = parseStringAt(ks, ke);
        if (d !== null && d == key) return load<usize>(e, 3 * sizeof<usize>());
      }
    }
    const c = this.rest;
    while (c.next()) {
      if (this.count < MAX_INDEXED) {
        const e = INDEX + <usize>this.count * 4 * sizeof<usize>();
        store<usize>(e, c.keyStart);
        store<usize>(e, c.keyEnd, sizeof<usize>());
        store<usize>(e, c.keyEscaped ? 1 : 0, 2 * sizeof<usize>());
        store<usize>(e, c.valueStart, 3 * sizeof<usize>());
        this.count++;
      }
      if (c.keyEquals(key)) return c.valueStart;
    }
    return 0;
  }

  /** Any top-level member of the envelope (null when absent). */
  get(key: string): Json | null {
    const v = this.valueStart(key);
    return v == 0 ? null : new Json(v, this.root.end);
  }

  private str(key: string): string {
    const v = this.get(key);
    if (v === null) return "";
    const s = v.asString();
    return s === null ? "" : s;
  }

  private num(key: string, fallback: f64): f64 {
    const v = this.get(key);
    return v === null ? fallback : v.asNumber(fallback);
  }

  /** "v", the ABI major version (1). */
  get version(): i32 {
    return <i32>this.num("v", 0);
  }
  /** on_request | on_response | on_stream_event | on_stream_end */
  get hook(): string {
    return this.str("hook");
  }
  /** The gateway request id. */
  get id(): string {
    return this.str("id");
  }
  /** chat | completions | embeddings | messages */
  get endpoint(): string {
    return this.str("endpoint");
  }
  get path(): string {
    return this.str("path");
  }
  /** The model the client asked for. */
  get model(): string {
    return this.str("model");
  }

  private headerView(name: string): Json | null {
    const h = this.get("headers");
    return h === null ? null : h.get(name.toLowerCase());
  }

  /** A request header (names are lower-cased by the host; `name` is lower-cased here). */
  header(name: string): string | null {
    const v = this.headerView(name);
    return v === null ? null : v.asString();
  }

  /** Whether header `name` is exactly `value` (no allocation for ASCII values). */
  headerIs(name: string, value: string): bool {
    const v = this.headerView(name);
    return v !== null && v.strEq(value);
  }

  /** principal.<key> (key_alias, team_id, user_id). */
  principal(key: string): string | null {
    const p = this.get("principal");
    if (p === null) return null;
    const v = p.get(key);
    return v === null ? null : v.asString();
  }

  /** The request's routing tags. */
  get tags(): string[] {
    const t = this.get("tags");
    return t === null ? [] : t.stringItems();
  }
  hasTag(tag: string): bool {
    const t = this.get("tags");
    return t !== null && t.containsString(tag);
  }

  /** The model groups this gateway serves. */
  get models(): string[] {
    const m = this.get("models");
    return m === null ? [] : m.stringItems();
  }
  servesModel(model: string): bool {
    const m = this.get("models");
    return m !== null && m.containsString(model);
  }

  /** Characters of message text; NaN when absent. */
  get promptChars(): f64 {
    return this.num("prompt_chars", NaN);
  }

  /** The request or response body (on_request, on_response); null when absent. */
  get body(): Json | null {
    return this.get("body");
  }
  /** on_response: the upstream status (0 when absent). */
  get status(): i32 {
    return <i32>this.num("status", 0);
  }
  /** on_stream_event: 0-based event number (-1 when absent). */
  get index(): i32 {
    return <i32>this.num("index", -1);
  }
  /** on_stream_event: the SSE event name (null for data-only events). */
  get event(): string | null {
    const v = this.get("event");
    return v === null ? null : v.asString();
  }
  /** on_stream_event: the event data (object, or a string such as "[DONE]"). */
  get data(): Json | null {
    return this.get("data");
  }
  /** on_stream_event / on_stream_end: the state returned for the previous event. */
  get state(): string | null {
    const v = this.get("state");
    return v === null ? null : v.asString();
  }
  /** on_stream_end: number of events. */
  get events(): i32 {
    return <i32>this.num("events", 0);
  }
  /** on_stream_end: false when the stream was cut. */
  get complete(): bool {
    const v = this.get("complete");
    return v !== null && v.asBool(false);
  }

  /** The whole envelope parsed into a Value tree (costly for large bodies). */
  toValue(): Value | null {
    return this.root.toValue();
  }

  /** The prompt text of the body; see `bodyTexts`. */
  texts(withPaths: bool = true): Text[] {
    const b = this.body;
    return b === null ? [] : bodyTexts(b, withPaths);
  }
}

/**
 * The prompt text of a request body, whatever its wire format: OpenAI chat `messages[].content`
 * (string, or `text` parts), Anthropic `system` and `messages[].content` (string or `text`
 * blocks), completions `prompt` and embeddings `input` (string or array of strings). Texts are
 * views: decode with `.text`, or search the raw bytes (see Json.rawAsciiLength). With
 * `withPaths` false, paths are left empty (saves building them when only the text matters).
 * The body is walked once, without allocating anything but the Texts.
 */
export function bodyTexts(body: Json, withPaths: bool = true): Text[] {
  const out: Text[] = [];
  const end = body.end;
  const c = new Members(body);
  while (c.next()) {
    const v = c.valueStart;
    if (c.keyEquals("messages")) {
      let item = firstItem(v, end);
      let i = 0;
      while (item != 0) {
        const content = memberValue(item, end, "content");
        let next: usize = 0;
        if (content != 0) {
          const path = withPaths ? "/messages/" + i.toString() + "/content" : "";
          // Continue after the content (already scanned) rather than rescanning the message.
          const ce = contentTexts(content, end, path, withPaths, out);
          const me: usize = ce == 0 ? <usize>0 : objectEndFrom(ce, end);
          next = me == 0 ? nextItem(item, end) : itemAfter(me, end);
        } else {
          next = nextItem(item, end);
        }
        item = next;
        i++;
        if (item == 0) c.valueEndsAt(lastArrayEnd);
      }
    } else if (c.keyEquals("system")) {
      const e = contentTexts(v, end, "/system", withPaths, out);
      if (e != 0) c.valueEndsAt(e);
    } else if (c.keyEquals("prompt")) {
      plainTexts(v, end, "/prompt", withPaths, out);
    } else if (c.keyEquals("input")) {
      plainTexts(v, end, "/input", withPaths, out);
    }
  }
  return out;
}

/** Adds the texts of a message content; returns the index after the content value (0 if unknown). */
function contentTexts(content: usize, end: usize, path: string, withPaths: bool, out: Text[]): usize {
  const k = load<u8>(content);
  if (k == 0x22) {
    const t = textAt(path, content, end);
    out.push(t);
    return t.literalEnd;
  }
  if (k == 0x5b) {
    let part = firstItem(content, end);
    let j = 0;
    while (part != 0) {
      const t = memberValue(part, end, "text");
      if (t != 0 && load<u8>(t) == 0x22) {
        out.push(textAt(withPaths ? path + "/" + j.toString() + "/text" : "", t, end));
      }
      part = nextItem(part, end);
      j++;
    }
    return lastArrayEnd;
  }
  return 0;
}

function plainTexts(v: usize, end: usize, path: string, withPaths: bool, out: Text[]): void {
  const k = load<u8>(v);
  if (k == 0x22) {
    out.push(textAt(path, v, end));
  } else if (k == 0x5b) {
    let item = firstItem(v, end);
    let i = 0;
    while (item != 0) {
      if (load<u8>(item) == 0x22) out.push(textAt(withPaths ? path + "/" + i.toString() : "", item, end));
      item = nextItem(item, end);
      i++;
    }
  }
}
