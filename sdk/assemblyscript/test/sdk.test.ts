// Unit tests of the SDK, compiled like a plugin and run by test/run.mjs on node.

import {
  Envelope, Json, Kind, Output, Value, parse, lastError, bodyTexts, MAX_DEPTH, info, error,
} from "../assembly";
export { gw_abi_v1, gw_alloc, gw_free } from "../assembly";

let failures = 0;

function check(ok: bool, what: string): void {
  if (!ok) {
    failures++;
    error("FAIL " + what);
  }
}

function eq(got: string, want: string, what: string): void {
  if (got != want) {
    failures++;
    error("FAIL " + what + ": got " + got + " want " + want);
  }
}

function roundTrip(input: string, want: string): void {
  const v = parse(input);
  if (v === null) {
    failures++;
    error("FAIL parse " + input + ": " + lastError);
    return;
  }
  eq(v.toString(), want, "round trip " + input);
}

function testJson(): void {
  roundTrip("null", "null");
  roundTrip(" [1, 2.5, -3e2, 0, -0.5, true, false] ", "[1,2.5,-300,0,-0.5,true,false]");
  roundTrip('{"a":{"b":["x",null]},"c":false}', '{"a":{"b":["x",null]},"c":false}');
  roundTrip('"\\u00e9\\n\\"\\\\\\/\\ud83d\\ude00"', '"é\\n\\"\\\\/😀"');
  roundTrip('"\\u0001\\t"', '"\\u0001\\t"');
  roundTrip("123456789012", "123456789012");
  roundTrip("0.1", "0.1");
  roundTrip("1e400", "null");
  roundTrip("{}", "{}");
  roundTrip("[]", "[]");
  const bad = [
    "", " ", "{", "[1,]", '{"a":1,}', "01", "1.", ".5", "-", "+1", "1e", "tru", "nul", '"abc',
    '"\\x"', '"\\ud800"', '"\\udc00"', "[1 2]", '{"a" 1}', "{a:1}", "1 2", "'a'", "NaN", "[1]x", '"\u0001"',
  ];
  for (let i = 0; i < bad.length; i++) check(parse(bad[i]) === null, "rejects " + bad[i]);
  check(parse("[".repeat(MAX_DEPTH + 1) + "]".repeat(MAX_DEPTH + 1)) === null, "depth limit");
  check(parse("[".repeat(MAX_DEPTH) + "]".repeat(MAX_DEPTH)) !== null, "depth at limit");
  const v = parse('{"a":1,"a":2,"s":"x","l":[{"k/~":true}]}')!;
  check(v.getNumber("a") == 2, "last duplicate wins (Value)");
  const p = v.pointer("/l/0/k~1~0");
  check(p !== null && p.isBool() && p.b, "pointer");
  check(v.pointer("/l/01") === null, "pointer leading zero");
  const built = Value.object().setNumber("n", 3).setString("s", "t").setNumber("n", 4).set("v", Value.strings(["a", "b"]));
  eq(built.toString(), '{"n":4,"s":"t","v":["a","b"]}', "builder");
}

function view(s: string): Json {
  const b = String.UTF8.encode(s);
  // Keep the buffer alive: views point into it (the GC only runs between hook calls).
  keep.push(b);
  return Json.at(changetype<usize>(b), <usize>b.byteLength);
}
let keep: ArrayBuffer[] = [];

function testView(): void {
  const v = view(' {"a" : [1, {"b":"x\\"y"}, [], {}, "s\\u00e9", -2.5e1, true, null] , "k\\u0041":7, "a":"dup", "e":[], "o":{}, "deep":{"x":{"y":[0,[1,2,{"z":"]}"}]]}}} ');
  check(v.kind == Kind.Object, "kind object");
  check(v.length == 6, "member count");
  const a = v.get("a")!;
  check(a.kind == Kind.Array, "first occurrence wins");
  check(a.length == 8, "array length");
  check(a.at(0)!.asNumber() == 1, "at 0");
  eq(a.at(1)!.get("b")!.asString()!, 'x"y', "escaped string");
  check(a.at(1)!.get("b")!.strEq('x"y'), "strEq escaped");
  check(a.at(2)!.length == 0 && a.at(3)!.length == 0, "empty containers");
  eq(a.at(4)!.asString()!, "sé", "unicode escape");
  check(a.at(5)!.asNumber() == -25, "number");
  check(a.at(6)!.asBool(), "bool");
  check(a.at(7)!.isNull(), "null");
  check(a.at(8) === null, "past the end");
  check(v.get("kA")!.asNumber() == 7, "escaped key");
  eq(v.get("deep")!.raw(), '{"x":{"y":[0,[1,2,{"z":"]}"}]]}}', "raw");
  const keys = v.keys();
  eq(keys.join(","), "a,kA,a,e,o,deep", "keys");
  eq(a.at(1)!.toValue()!.toString(), '{"b":"x\\"y"}', "toValue");
  check(view('"héllo"').strEq("héllo"), "strEq non-ASCII");
  check(!view('"hello"').strEq("héllo"), "strEq length mismatch");
  check(view('"abc"').rawAsciiLength() == 3, "rawAsciiLength");
  check(view('"ab\\nc"').rawAsciiLength() == -1, "rawAsciiLength escaped");
  check(view('"aé"').rawAsciiLength() == -1, "rawAsciiLength non-ASCII");
  // Quotes and escapes around the 8-byte scanning words.
  for (let n = 0; n < 40; n++) {
    const esc = ["", '\\"', "\\\\", "\\n", "\\u00e9"];
    for (let k = 0; k < esc.length; k++) {
      const text = "a".repeat(n) + esc[k] + "b".repeat(n % 9);
      const doc = view('{"s":"' + text + '","t":[1]}');
      const want = parse('"' + text + '"')!;
      eq(doc.get("s")!.asString()!, want.s, "long string " + n.toString() + " " + k.toString());
      check(doc.get("t")!.length == 1, "after long string");
    }
  }
  // ASCII detection at every offset.
  for (let n = 0; n < 24; n++) {
    check(view('"' + "a".repeat(n) + '"').rawAsciiLength() == n, "ascii length " + n.toString());
    check(view('"' + "a".repeat(n) + "é" + "b".repeat(n % 5) + '"').rawAsciiLength() == -1, "non-ascii at " + n.toString());
    check(view('"' + "a".repeat(n) + '\\n"').rawAsciiLength() == -1, "escape at " + n.toString());
  }
  // Literals and numbers of every length inside containers.
  for (let n = 0; n < 24; n++) {
    const doc = view("[" + "1".repeat(n + 1) + ',"x",true ,null\t,false]');
    eq(doc.at(1)!.asString()!, "x", "after number " + n.toString());
    check(doc.length == 5 && doc.at(4)!.asBool(true) == false, "literals " + n.toString());
  }
  // Malformed input never traps.
  const bad = ["", "{", '{"a"', '{"a":', '{"a":[1,', '["abc', '{"a" 1}', "}", "]", "[1,,2]", '"\\'];
  for (let i = 0; i < bad.length; i++) {
    const b = view(bad[i]);
    b.kind;
    b.length;
    b.get("a");
    b.at(1);
    b.raw();
    b.asString();
    b.asNumber();
    b.toValue();
    const g = b.get("a");
    if (g !== null) g.length;
    const e = new Envelope(b);
    e.hook;
    e.tags;
    e.texts();
    e.promptChars;
    e.get("zz");
  }
}

const ENV = '{"v":1,"hook":"on_request","id":"gw-1","endpoint":"chat","model":"gpt-4o",' +
  '"headers":{"x-tier":"premium"},"principal":{"team_id":"t1"},"tags":["eu","batch"],' +
  '"models":["gpt-4o","gpt-4o-mini"],"prompt_chars":42,"future_field":{"x":1},' +
  '"body":{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},' +
  '{"role":"user","content":[{"type":"text","text":"Hello"},{"type":"image_url","image_url":{"url":"u"}}]}]}}';

function testEnvelope(): void {
  const env = new Envelope(view(ENV));
  check(env.version == 1, "version");
  eq(env.hook, "on_request", "hook");
  eq(env.header("X-Tier")!, "premium", "header");
  check(env.headerIs("x-tier", "premium") && !env.headerIs("x-tier", "Premium"), "headerIs");
  check(env.header("x-missing") === null, "missing header");
  eq(env.principal("team_id")!, "t1", "principal");
  check(env.hasTag("batch") && !env.hasTag("us"), "hasTag");
  check(env.servesModel("gpt-4o-mini"), "servesModel");
  eq(env.models.join(","), "gpt-4o,gpt-4o-mini", "models");
  eq(env.tags.join(","), "eu,batch", "tags");
  check(env.promptChars == 42, "promptChars");
  check(env.get("future_field")!.get("x")!.asNumber() == 1, "unknown field");
  check(isNaN(new Envelope(view("{}")).promptChars), "promptChars absent");
  const texts = env.texts();
  check(texts.length == 2, "texts count");
  eq(texts[0].path + "=" + texts[0].text, "/messages/0/content=Be brief.", "text 0");
  eq(texts[1].path + "=" + texts[1].text, "/messages/1/content/0/text=Hello", "text 1");
  const an = bodyTexts(view('{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"U\\u00e9"}]}'));
  eq(an[0].path + "=" + an[0].text + "," + an[1].path + "=" + an[1].text, "/system/0/text=S,/messages/0/content=Ué", "anthropic");
  const mixed = bodyTexts(view('{"messages":[{"content":"first","role":"user","x":{"a":[1,"]"]}},' +
    '{"role":"assistant","content":[{"type":"text","text":"s\u00e9cond"}],"name":"n"},{"content":null,"role":"tool"},' +
    '{"role":"user","content":"third message, long enough to take several words","extra":true}],"system":"sys","z":1}'));
  check(mixed.length == 4, "mixed count " + mixed.length.toString());
  if (mixed.length == 4) {
    eq(mixed[0].path + "=" + mixed[0].text, "/messages/0/content=first", "mixed 0");
    eq(mixed[1].path + "=" + mixed[1].text, "/messages/1/content/0/text=sécond", "mixed 1");
    eq(mixed[2].path + "=" + mixed[2].text, "/messages/3/content=third message, long enough to take several words", "mixed 2");
    eq(mixed[3].path + "=" + mixed[3].text, "/system=sys", "mixed 3");
    check(mixed[0].asciiLength == 5 && mixed[1].asciiLength == -1 && mixed[2].asciiLength == 48, "asciiLength");
  }
  const em = bodyTexts(view('{"input":["a","b"],"prompt":"p"}'));
  eq(em[0].path + "," + em[1].path + "," + em[2].path, "/input/0,/input/1,/prompt", "document order");
  // Lazy index: fields before the body are found without looking at it.
  const lazy = new Envelope(view('{"v":1,"tags":["batch"],"body":{"messages":[!!! not json'));
  check(lazy.hasTag("batch") && lazy.version == 1 && lazy.get("missing") === null, "lazy index");
  // Two envelopes at once: the older one still answers (without the shared index).
  const e1 = new Envelope(view('{"a":1,"b":2}'));
  check(e1.get("b")!.asNumber() == 2, "e1");
  const e2 = new Envelope(view('{"a":3,"b":4}'));
  check(e2.get("b")!.asNumber() == 4 && e1.get("a")!.asNumber() == 1 && e1.get("b")!.asNumber() == 2, "two envelopes");
}

function testOutput(): void {
  check(Output.cont().isNoop(), "noop");
  eq(Output.cont().toString(), '{"action":"continue"}', "continue");
  eq(
    Output.route("m").fallbacks(["a", "b"]).deployment("d").toString(),
    '{"action":"route","route":{"model":"m","fallbacks":["a","b"],"deployment":"d"}}',
    "route",
  );
  eq(
    Output.reject(400, "c", "m").label("x").label("y").toString(),
    '{"action":"reject","reject":{"status":400,"code":"c","message":"m"},"labels":["x","y"]}',
    "reject",
  );
  eq(Output.reject(0, "", "m").toString(), '{"action":"reject","reject":{"message":"m"}}', "reject defaults");
  eq(
    Output.respond(200, Value.object().setBool("ok", true)).toString(),
    '{"action":"respond","respond":{"status":200,"body":{"ok":true}}}',
    "respond",
  );
  eq(Output.error("boom").toString(), '{"action":"error","error":"boom"}', "error");
  eq(
    Output.cont().setHeader("x-a", "1").removeHeader("x-b").patchReplace("/messages/0/content", Value.string("[EMAIL]"))
      .redaction("/messages/0/content", "email", 1).state("s").log("n").toString(),
    '{"set_headers":{"x-a":"1"},"remove_headers":["x-b"],"patch":[{"op":"replace","path":"/messages/0/content","value":"[EMAIL]"}],"redactions":[{"path":"/messages/0/content","kind":"email","count":1}],"state":"s","log":"n"}',
    "continue with changes",
  );
  eq(Output.cont().dropEvent().insertEvent(null, Value.string("t")).toString(), '{"drop":true,"insert":[{"data":"t"}]}', "stream");
  eq(Output.cont().field("x", Value.number(1)).label("l").toString(), '{"labels":["l"],"x":1}', "extra field");
  eq(Output.cont().setHeader("a", "1").setHeader("a", "2").toString(), '{"set_headers":{"a":"2"}}', "header replaced");
  eq(Output.cont().patchAdd("/a", Value.bool(true)).patchRemove("/b").toString(), '{"patch":[{"op":"add","path":"/a","value":true},{"op":"remove","path":"/b"}]}', "patches");
}

export function run(): i32 {
  testJson();
  testView();
  testEnvelope();
  testOutput();
  keep = [];
  info("sdk tests done");
  return failures;
}
