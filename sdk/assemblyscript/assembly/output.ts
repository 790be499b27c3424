// Result documents (ABI §4): one builder for every hook. A hook returning null (or an Output
// with nothing set) hands 0 to the host: "continue, no changes". The document is written
// straight from these fields into the result buffer (no intermediate Value tree: fewer
// allocations, so less work for the per-call collection).

import { ByteBuf, Value, writeString, writeValue } from "./json";

export class Output {
  private action: string | null = null;
  private routeModel: string | null = null;
  private routeDeployment: string | null = null;
  private routeFallbacks: string[] | null = null;
  private rejectStatus: i32 = 0;
  private rejectCode: string = "";
  private rejectMessage: string | null = null;
  private respondStatus: i32 = 0;
  private respondBody: Value | null = null;
  private errorMessage: string | null = null;
  /** name, value, name, value... */
  private setHeaders: string[] | null = null;
  private removeHeaders: string[] | null = null;
  private patches: Value[] | null = null;
  private dropped: bool = false;
  private inserts: Value[] | null = null;
  private redactions: Value[] | null = null;
  private labels: string[] | null = null;
  private stateValue: string | null = null;
  private logNote: string | null = null;
  private extra: Value | null = null;

  /** Continue; add patches, headers, labels... to change things. */
  static cont(): Output {
    return new Output();
  }

  /** Route the request to a configured model group (on_request only). */
  static route(model: string): Output {
    const o = new Output();
    o.action = "route";
    o.routeModel = model;
    return o;
  }

  /** Reject with an error in the client's wire format (status 400–599; 0 / "" take the host defaults 403 / blocked_by_plugin). */
  static reject(status: i32, code: string, message: string): Output {
    const o = new Output();
    o.action = "reject";
    o.rejectStatus = status;
    o.rejectCode = code;
    o.rejectMessage = message;
    return o;
  }

  /** Answer without calling upstream (on_request only, not for streaming requests). */
  static respond(status: i32, body: Value): Output {
    const o = new Output();
    o.action = "respond";
    o.respondStatus = status;
    o.respondBody = body;
    return o;
  }

  /** Fail deliberately (a plugin failure; the failure policy applies). */
  static error(message: string): Output {
    const o = new Output();
    o.action = "error";
    o.errorMessage = message;
    return o;
  }

  isNoop(): bool {
    return (
      this.action === null &&
      this.setHeaders === null &&
      this.removeHeaders === null &&
      this.patches === null &&
      !this.dropped &&
      this.inserts === null &&
      this.redactions === null &&
      this.labels === null &&
      this.stateValue === null &&
      this.logNote === null &&
      this.extra === null
    );
  }

  /** Sets any result field (for fields added to ABI v1 after this SDK); written last. */
  field(key: string, v: Value): Output {
    let e = this.extra;
    if (e === null) {
      e = Value.object();
      this.extra = e;
    }
    e.set(key, v);
    return this;
  }
  /** route: one deployment id of the model group. */
  deployment(id: string): Output {
    this.routeDeployment = id;
    return this;
  }
  /** route: replaces the fallback list. */
  fallbacks(models: string[]): Output {
    this.routeFallbacks = models;
    return this;
  }
  setHeader(name: string, value: string): Output {
    let h = this.setHeaders;
    if (h === null) {
      h = [];
      this.setHeaders = h;
    }
    for (let i = 0; i < h.length; i += 2) {
      if (h[i] == name) {
        h[i + 1] = value;
        return this;
      }
    }
    h.push(name);
    h.push(value);
    return this;
  }
  removeHeader(name: string): Output {
    let r = this.removeHeaders;
    if (r === null) {
      r = [];
      this.removeHeaders = r;
    }
    r.push(name);
    return this;
  }
  /** An RFC 6902 operation against the body (or event data). */
  patch(op: Value): Output {
    let p = this.patches;
    if (p === null) {
      p = [];
      this.patches = p;
    }
    p.push(op);
    return this;
  }
  patchReplace(path: string, value: Value): Output {
    return this.patch(Value.object().setString("op", "replace").setString("path", path).set("value", value));
  }
  patchAdd(path: string, value: Value): Output {
    return this.patch(Value.object().setString("op", "add").setString("path", path).set("value", value));
  }
  patchRemove(path: string): Output {
    return this.patch(Value.object().setString("op", "remove").setString("path", path));
  }
  /** Records a redaction for the audit log. */
  redaction(path: string, kind: string, count: i32): Output {
    let r = this.redactions;
    if (r === null) {
      r = [];
      this.redactions = r;
    }
    r.push(Value.object().setString("path", path).setString("kind", kind).setNumber("count", count));
    return this;
  }
  label(label: string): Output {
    let l = this.labels;
    if (l === null) {
      l = [];
      this.labels = l;
    }
    l.push(label);
    return this;
  }
  /** on_stream_event: handed back with the next event (at most 4 KiB). */
  state(state: string): Output {
    this.stateValue = state;
    return this;
  }
  /** A short note logged at info level with the request id. */
  log(note: string): Output {
    this.logNote = note;
    return this;
  }
  /** on_stream_event: do not pass this event on. */
  dropEvent(): Output {
    this.dropped = true;
    return this;
  }
  /** on_stream_event: emit an event before this one (event null for data-only events). */
  insertEvent(event: string | null, data: Value): Output {
    const ev = Value.object();
    if (event !== null) ev.setString("event", event);
    ev.set("data", data);
    let i = this.inserts;
    if (i === null) {
      i = [];
      this.inserts = i;
    }
    i.push(ev);
    return this;
  }

  /** Writes the result document into buf. */
  write(buf: ByteBuf): void {
    let first = true;
    buf.byte(0x7b);
    const action = this.action;
    if (action !== null) {
      first = key(buf, first, "action");
      writeString(buf, action);
    }
    const model = this.routeModel;
    if (model !== null) {
      first = key(buf, first, "route");
      buf.ascii('{"model":');
      writeString(buf, model);
      const f = this.routeFallbacks;
      if (f !== null) {
        buf.ascii(',"fallbacks":');
        writeStrings(buf, f);
      }
      const d = this.routeDeployment;
      if (d !== null) {
        buf.ascii(',"deployment":');
        writeString(buf, d);
      }
      buf.byte(0x7d);
    }
    const msg = this.rejectMessage;
    if (msg !== null) {
      first = key(buf, first, "reject");
      buf.byte(0x7b);
      if (this.rejectStatus != 0) {
        buf.ascii('"status":');
        buf.ascii(this.rejectStatus.toString());
        buf.byte(0x2c);
      }
      if (this.rejectCode.length > 0) {
        buf.ascii('"code":');
        writeString(buf, this.rejectCode);
        buf.byte(0x2c);
      }
      buf.ascii('"message":');
      writeString(buf, msg);
      buf.byte(0x7d);
    }
    const body = this.respondBody;
    if (body !== null) {
      first = key(buf, first, "respond");
      buf.ascii('{"status":');
      buf.ascii(this.respondStatus.toString());
      buf.ascii(',"body":');
      writeValue(buf, body);
      buf.byte(0x7d);
    }
    const err = this.errorMessage;
    if (err !== null) {
      first = key(buf, first, "error");
      writeString(buf, err);
    }
    const sh = this.setHeaders;
    if (sh !== null) {
      first = key(buf, first, "set_headers");
      buf.byte(0x7b);
      for (let i = 0; i < sh.length; i += 2) {
        if (i > 0) buf.byte(0x2c);
        writeString(buf, sh[i]);
        buf.byte(0x3a);
        writeString(buf, sh[i + 1]);
      }
      buf.byte(0x7d);
    }
    const rh = this.removeHeaders;
    if (rh !== null) {
      first = key(buf, first, "remove_headers");
      writeStrings(buf, rh);
    }
    const p = this.patches;
    if (p !== null) {
      first = key(buf, first, "patch");
      writeValues(buf, p);
    }
    if (this.dropped) {
      first = key(buf, first, "drop");
      buf.ascii("true");
    }
    const ins = this.inserts;
    if (ins !== null) {
      first = key(buf, first, "insert");
      writeValues(buf, ins);
    }
    const red = this.redactions;
    if (red !== null) {
      first = key(buf, first, "redactions");
      writeValues(buf, red);
    }
    const lb = this.labels;
    if (lb !== null) {
      first = key(buf, first, "labels");
      writeStrings(buf, lb);
    }
    const st = this.stateValue;
    if (st !== null) {
      first = key(buf, first, "state");
      writeString(buf, st);
    }
    const lg = this.logNote;
    if (lg !== null) {
      first = key(buf, first, "log");
      writeString(buf, lg);
    }
    const ex = this.extra;
    if (ex !== null) {
      for (let i = 0; i < ex.keys.length; i++) {
        first = key(buf, first, ex.keys[i]);
        writeValue(buf, ex.items[i]);
      }
    }
    buf.byte(0x7d);
  }

  toString(): string {
    if (this.isNoop()) return '{"action":"continue"}';
    const buf = new ByteBuf(128);
    this.write(buf);
    const s = String.UTF8.decodeUnsafe(buf.ptr, buf.len);
    buf.free();
    return s;
  }
}

function key(buf: ByteBuf, first: bool, k: string): bool {
  if (!first) buf.byte(0x2c);
  writeString(buf, k);
  buf.byte(0x3a);
  return false;
}

function writeStrings(buf: ByteBuf, list: string[]): void {
  buf.byte(0x5b);
  for (let i = 0; i < list.length; i++) {
    if (i > 0) buf.byte(0x2c);
    writeString(buf, list[i]);
  }
  buf.byte(0x5d);
}

function writeValues(buf: ByteBuf, list: Value[]): void {
  buf.byte(0x5b);
  for (let i = 0; i < list.length; i++) {
    if (i > 0) buf.byte(0x2c);
    writeValue(buf, list[i]);
  }
  buf.byte(0x5d);
}
