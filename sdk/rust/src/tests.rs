//! Native unit tests: `sdk/rust/test.sh` (or `rustc --edition 2021 --test src/lib.rs`).

use crate::*;

#[test]
fn parse_and_serialize_round_trip() {
    let cases = [
        ("null", "null"),
        ("true", "true"),
        (" [1, 2.5, -3e2, 0, -0.5] ", "[1,2.5,-300,0,-0.5]"),
        ("{\"a\":{\"b\":[\"x\",null]},\"c\":false}", "{\"a\":{\"b\":[\"x\",null]},\"c\":false}"),
        ("\"\\u00e9\\n\\\"\\\\\\/\\ud83d\\ude00\"", "\"é\\n\\\"\\\\/😀\""),
        ("\"\\u0001\"", "\"\\u0001\""),
        ("1e400", "null"),
        ("123456789012", "123456789012"),
        ("0.1", "0.1"),
        ("1e21", "1e21"),
        ("{}", "{}"),
        ("[]", "[]"),
    ];
    for (input, want) in cases.iter() {
        let v = Value::parse(input).unwrap_or_else(|e| panic!("{}: {}", input, e));
        assert_eq!(v.to_json(), *want, "input {}", input);
    }
}

#[test]
fn parse_rejects_invalid_json() {
    let bad = [
        "", " ", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "+1", "1e", "tru", "nul", "\"abc",
        "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\u{1}\"", "[1 2]", "{\"a\" 1}", "{a:1}", "1 2", "'a'",
        "NaN", "[1]x",
    ];
    for input in bad.iter() {
        assert!(Value::parse(input).is_err(), "accepted {:?}", input);
    }
    assert!(Value::parse_bytes(b"\"\xff\"").is_err());
    let deep = "[".repeat(json::MAX_DEPTH + 1) + &"]".repeat(json::MAX_DEPTH + 1);
    assert!(Value::parse(&deep).is_err());
    let ok = "[".repeat(json::MAX_DEPTH) + &"]".repeat(json::MAX_DEPTH);
    assert!(Value::parse(&ok).is_ok());
}

#[test]
fn accessors() {
    let v = Value::parse("{\"a\":1,\"a\":2,\"s\":\"x\",\"l\":[{\"k/~\":true}]}").unwrap();
    assert_eq!(v.get("a").and_then(Value::as_i64), Some(2), "last duplicate wins");
    assert_eq!(v.field("s").as_str(), Some("x"));
    assert!(v.field("missing").is_null());
    assert_eq!(v.pointer("/l/0/k~1~0"), Some(&Value::Bool(true)));
    assert_eq!(v.pointer("/l/01"), None);
    assert_eq!(v.pointer(""), Some(&v));
    let built = Value::object().with("n", 3).with("s", "t").with("n", 4).with("v", vec!["a", "b"]);
    assert_eq!(built.to_json(), "{\"n\":4,\"s\":\"t\",\"v\":[\"a\",\"b\"]}");
}

const ENV: &str = r#"{"v":1,"hook":"on_request","id":"gw-1","endpoint":"chat","model":"gpt-4o",
 "headers":{"x-tier":"premium"},"principal":{"team_id":"t1"},"tags":["eu","batch"],
 "models":["gpt-4o","gpt-4o-mini"],"prompt_chars":42,"future_field":{"x":1},
 "body":{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},
   {"role":"user","content":[{"type":"text","text":"Hello"},{"type":"image_url","image_url":{"url":"u"}}]}]}}"#;

#[test]
fn envelope_accessors() {
    let env = Envelope::parse(ENV);
    assert_eq!(env.version(), 1);
    assert_eq!(env.hook(), "on_request");
    assert_eq!(env.header("X-Tier").as_deref(), Some("premium"));
    assert!(env.header_is("x-tier", "premium") && !env.header_is("x-tier", "Premium"));
    assert_eq!(env.header("x-missing"), None);
    assert_eq!(env.principal("team_id").as_deref(), Some("t1"));
    assert!(env.has_tag("batch") && !env.has_tag("us"));
    assert!(env.serves_model("gpt-4o-mini"));
    assert_eq!(env.models(), vec!["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(env.tags(), vec!["eu", "batch"]);
    assert_eq!(env.prompt_chars(), Some(42.0));
    assert_eq!(env.get("future_field").and_then(|f| f.get("x")).and_then(|x| x.as_i64()), Some(1));
    assert_eq!(env.get("nope").map(|v| v.raw()), None);
    let texts: Vec<(String, String)> = env.texts().into_iter().map(|t| (t.path, t.text.into_owned())).collect();
    assert_eq!(
        texts,
        vec![
            ("/messages/0/content".to_string(), "Be brief.".to_string()),
            ("/messages/1/content/0/text".to_string(), "Hello".to_string())
        ]
    );
    let anthropic = r#"{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"U\u00e9"}]}"#;
    let t: Vec<(String, String)> =
        body_texts(Json::new(anthropic.as_bytes())).into_iter().map(|t| (t.path, t.text.into_owned())).collect();
    assert_eq!(t, vec![("/system/0/text".into(), "S".into()), ("/messages/0/content".into(), "Ué".into())]);
    let emb = r#"{"input":["a","b"],"prompt":"p"}"#;
    let t: Vec<String> = body_texts(Json::new(emb.as_bytes())).into_iter().map(|t| t.path).collect();
    assert_eq!(t, vec!["/input/0", "/input/1", "/prompt"], "document order");
}

#[test]
fn lazy_view() {
    let doc = r#" {"a" : [1, {"b":"x\"y"}, [], {}, "s\u00e9", -2.5e1, true, null] , "k\u0041":7, "a":"dup",
        "e":[], "o":{}, "deep":{"x":{"y":[0,[1,2,{"z":"]}"}]]}}} "#;
    let v = Json::new(doc.as_bytes());
    assert_eq!(v.kind(), Some(Kind::Object));
    assert_eq!(v.len(), 6);
    let a = v.get("a").unwrap();
    assert_eq!(a.kind(), Some(Kind::Array), "first occurrence wins");
    assert_eq!(a.len(), 8);
    assert_eq!(a.at(0).unwrap().as_i64(), Some(1));
    assert_eq!(a.at(1).unwrap().get("b").unwrap().as_str().as_deref(), Some("x\"y"));
    assert!(a.at(1).unwrap().get("b").unwrap().str_eq("x\"y"));
    assert_eq!(a.at(2).unwrap().len(), 0);
    assert_eq!(a.at(3).unwrap().len(), 0);
    assert_eq!(a.at(4).unwrap().as_str().as_deref(), Some("sé"));
    assert_eq!(a.at(5).unwrap().as_f64(), Some(-25.0));
    assert_eq!(a.at(6).unwrap().as_bool(), Some(true));
    assert!(a.at(7).unwrap().is_null());
    assert!(a.at(8).is_none());
    assert_eq!(v.get("kA").and_then(|k| k.as_i64()), Some(7), "escaped keys are compared decoded");
    assert_eq!(v.pointer("/deep/x/y/1/2/z").and_then(|z| z.as_str()).as_deref(), Some("]}"));
    assert_eq!(v.get("deep").unwrap().raw(), r#"{"x":{"y":[0,[1,2,{"z":"]}"}]]}}"#);
    assert_eq!(v.get("e").unwrap().items().count(), 0);
    assert_eq!(v.get("o").unwrap().members().count(), 0);
    let keys: Vec<String> = v.members().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(keys, vec!["a", "kA", "a", "e", "o", "deep"]);
    assert_eq!(v.get("a").unwrap().to_value().unwrap().at(1), Some(&Value::object().with("b", "x\"y")));
    // Malformed or truncated input never panics.
    for bad in ["", "{", "{\"a\"", "{\"a\":", "{\"a\":[1,", "[\"abc", "{\"a\" 1}", "}", "]", "[1,,2]", "\"\\"] {
        let v = Json::new(bad.as_bytes());
        let _ = (v.kind(), v.len(), v.get("a"), v.at(1), v.raw(), v.as_str(), v.as_f64(), v.to_value());
        let _ = v.get("a").map(|x| (x.len(), x.raw(), x.items().count()));
        let env = Envelope::parse(bad);
        let _ = (env.hook(), env.tags(), env.texts(), env.prompt_chars(), env.get("zz"));
    }
}

#[test]
fn long_strings() {
    // Quotes and escapes at every offset around the 8-byte scanning words.
    for n in 0..40 {
        for esc in ["", "\\\"", "\\\\", "\\n", "\\u00e9"] {
            let text = format!("{}{}{}", "a".repeat(n), esc, "b".repeat(n % 9));
            let doc = format!(r#"{{"s":"{}","t":[1]}}"#, text);
            let v = Json::new(doc.as_bytes());
            let want = Value::parse(&format!("\"{}\"", text)).unwrap();
            assert_eq!(v.get("s").unwrap().as_str().as_deref(), want.as_str(), "{}", doc);
            assert_eq!(v.get("t").unwrap().len(), 1, "{}", doc);
        }
    }
}

#[test]
fn bytes_eq_all_lengths() {
    for n in 0..40usize {
        let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
        assert!(view::bytes_eq(&a, &a.clone()), "len {}", n);
        for k in 0..n {
            let mut b = a.clone();
            b[k] ^= 1;
            assert!(!view::bytes_eq(&a, &b), "len {} diff at {}", n, k);
        }
        assert!(!view::bytes_eq(&a, &a[..n.saturating_sub(1)]) || n == 0);
    }
}

#[test]
fn write_string_escapes_everywhere() {
    for n in 0..20 {
        for c in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é', ' ', '~'] {
            let s = format!("{}{}{}", "x".repeat(n), c, "y".repeat(n % 11));
            let mut out = String::new();
            json::write_string(&s, &mut out);
            assert_eq!(Value::parse(&out).unwrap().as_str(), Some(s.as_str()), "{:?} -> {}", s, out);
            let want_escaped = c < ' ' || c == '"' || c == '\\';
            assert_eq!(out.len() > s.len() + 2, want_escaped, "{:?} -> {}", s, out);
        }
    }
}

#[test]
fn literals_and_numbers_in_containers() {
    let doc = "{\"a\":12345678901234,\"b\":[true,false,null,-1.5e+3,0],\"c\":1 ,\"d\":2\t}";
    let v = Json::new(doc.as_bytes());
    assert_eq!(v.len(), 4);
    assert_eq!(v.get("a").and_then(|x| x.as_i64()), Some(12345678901234));
    let b: Vec<String> = v.get("b").unwrap().items().map(|x| x.raw().to_string()).collect();
    assert_eq!(b, vec!["true", "false", "null", "-1.5e+3", "0"]);
    assert_eq!(v.get("c").and_then(|x| x.as_i64()), Some(1));
    assert_eq!(v.get("d").and_then(|x| x.as_i64()), Some(2));
    for n in 0..30 {
        let doc = format!("[{},{}]", "1".repeat(n + 1), "\"x\"");
        let v = Json::new(doc.as_bytes());
        assert_eq!(v.at(1).and_then(|x| x.as_str()).as_deref(), Some("x"), "{}", doc);
        assert_eq!(v.at(0).unwrap().raw().len(), n + 1);
    }
}

#[test]
fn envelope_index_is_lazy() {
    // Fields before the body are found without looking at it, even when it is malformed.
    let env = Envelope::parse(r#"{"v":1,"tags":["batch"],"body":{"messages":[!!! not json"#);
    assert!(env.has_tag("batch"));
    assert_eq!(env.version(), 1);
    assert!(env.get("missing").is_none());
    assert_eq!(env.tags(), vec!["batch"]);
}

#[test]
fn output_builders() {
    assert!(Output::cont().is_noop());
    assert_eq!(Output::cont().to_json(), "{\"action\":\"continue\"}");
    assert_eq!(
        Output::route("m").fallbacks(&["a", "b"]).deployment("d").to_json(),
        "{\"action\":\"route\",\"route\":{\"model\":\"m\",\"fallbacks\":[\"a\",\"b\"],\"deployment\":\"d\"}}"
    );
    assert_eq!(
        Output::reject(400, "c", "m").label("x").label("y").to_json(),
        "{\"action\":\"reject\",\"reject\":{\"status\":400,\"code\":\"c\",\"message\":\"m\"},\"labels\":[\"x\",\"y\"]}"
    );
    assert_eq!(
        Output::respond(200, Value::object().with("ok", true)).to_json(),
        "{\"action\":\"respond\",\"respond\":{\"status\":200,\"body\":{\"ok\":true}}}"
    );
    assert_eq!(Output::error("boom").to_json(), "{\"action\":\"error\",\"error\":\"boom\"}");
    assert_eq!(
        Output::cont()
            .patch_replace("/messages/0/content", "[EMAIL]")
            .redaction("/messages/0/content", "email", 1)
            .set_header("x-a", "1")
            .remove_header("x-b")
            .state("s")
            .log("n")
            .to_json(),
        "{\"set_headers\":{\"x-a\":\"1\"},\"remove_headers\":[\"x-b\"],\"patch\":[{\"op\":\"replace\",\"path\":\"/messages/0/content\",\"value\":\"[EMAIL]\"}],\"redactions\":[{\"path\":\"/messages/0/content\",\"kind\":\"email\",\"count\":1}],\"state\":\"s\",\"log\":\"n\"}"
    );
    assert_eq!(Output::cont().field("x", 1).to_json(), "{\"x\":1}");
    assert_eq!(Output::reject(0, "", "m").to_json(), "{\"action\":\"reject\",\"reject\":{\"message\":\"m\"}}");
    assert_eq!(
        Output::route("m").to_value().pointer("/route/model").and_then(Value::as_str),
        Some("m")
    );
    assert_eq!(
        Output::cont().drop_event().insert_event(None, Value::from("t")).to_json(),
        "{\"drop\":true,\"insert\":[{\"data\":\"t\"}]}"
    );
}

fn req(env: &Envelope) -> Option<Output> {
    if env.has_tag("batch") {
        Some(Output::route("gpt-4o-mini"))
    } else {
        None
    }
}

#[test]
fn run_hook_results() {
    assert_eq!(
        run_hook(ENV.as_bytes(), req).as_deref(),
        Some("{\"action\":\"route\",\"route\":{\"model\":\"gpt-4o-mini\"}}")
    );
    assert_eq!(run_hook(b"{\"tags\":[]}", req), None);
    assert_eq!(run_hook(b"{", req), None);
    let bad = run_config_hook(b"{", |_: &Value| ()).unwrap();
    assert!(bad.starts_with("{\"action\":\"error\""), "{}", bad);
    let failing = |_: &Value| -> Result<(), String> { Err("bad config".into()) };
    assert_eq!(run_config_hook(b"null", failing).as_deref(), Some("{\"action\":\"error\",\"error\":\"bad config\"}"));
    assert_eq!(run_config_hook(b"{}", |_: &Value| ()), None);
}

#[test]
fn buffers_and_globals() {
    let p = alloc_buffer(100);
    assert!(!p.is_null());
    unsafe {
        std::ptr::write_bytes(p, 7, 100);
        free_buffer(p);
        free_buffer(std::ptr::null_mut());
    }
    let z = alloc_buffer(0);
    assert!(!z.is_null());
    unsafe { free_buffer(z) };
    static G: Global<Vec<u32>> = Global::new();
    assert_eq!(G.with(|v| v.len()), None);
    G.set(vec![1, 2]);
    G.with_mut(|v| v.push(3));
    assert_eq!(G.with(|v| v.clone()), Some(vec![1, 2, 3]));
    assert_eq!(G.take(), Some(vec![1, 2, 3]));
}

on_request!(req);
plugin! { on_response: req, on_stream_end: req }
