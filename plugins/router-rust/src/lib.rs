//! router-rust: a custom model router (plugin ABI v1, Rust SDK). The same rules, with the same
//! semantics, as plugins/router-go; both pass plugins/router-testdata/*.json.
//!
//! Config: {"rules":[{"header":"x-tier","equals":"premium","model":"gpt-4o"},
//!                   {"tag":"batch","model":"gpt-4o-mini"},
//!                   {"max_prompt_chars":200,"model":"gpt-4o-mini"}, ...],
//!          "fallbacks":["gpt-4o"]}
//! Rules are tried in order and the first match routes; see README.md for the exact semantics.

use gw_sdk::{Envelope, Global, Output, Value};

/// One condition of a rule; a rule matches when all of its conditions hold.
enum Cond {
    /// headers[name] == value (name lower-cased).
    Header(String, String),
    /// tags contains the tag.
    Tag(String),
    /// envelope[field] is a number <= limit (max_<field>).
    Max(String, f64),
    /// envelope[field] is a number >= limit (min_<field>).
    Min(String, f64),
    /// A key this router does not know: never holds.
    Never,
}

struct Rule {
    model: String,
    conds: Vec<Cond>,
}

struct Config {
    rules: Vec<Rule>,
    fallbacks: Option<Vec<String>>,
}

static CONFIG: Global<Config> = Global::new();

/// Reads rule `i`; the error messages are router-go's, so both routers fail a bad config alike.
fn parse_rule(i: usize, v: &Value) -> Result<Rule, String> {
    let err = |msg: &str| format!("rules[{}]: {}", i, msg);
    let pairs = v.as_object().ok_or_else(|| err("want an object"))?;
    let model = match v.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => return Err(err("model: required")),
    };
    let mut conds = Vec::new();
    for (key, val) in pairs {
        match key.as_str() {
            // "equals" belongs to "header"; alone it is ignored (as router-go does).
            "model" | "equals" => {}
            "header" => match (val.as_str(), v.get("equals").and_then(Value::as_str)) {
                (Some(name), Some(want)) if !name.is_empty() => {
                    conds.push(Cond::Header(name.to_ascii_lowercase(), want.to_string()))
                }
                _ => return Err(err("header: want a header name and an equals string")),
            },
            "tag" => match val.as_str() {
                // An empty tag sets no condition.
                Some("") => {}
                Some(t) => conds.push(Cond::Tag(t.to_string())),
                None => return Err(err("tag: want a string")),
            },
            k if (k.starts_with("max_") || k.starts_with("min_")) && k.len() > 4 => {
                let n = val.as_f64().ok_or_else(|| err(&format!("{}: want a number", k)))?;
                let field = k[4..].to_string();
                conds.push(if k.starts_with("max_") { Cond::Max(field, n) } else { Cond::Min(field, n) });
            }
            // A condition this router does not know: the rule never matches.
            _ => conds.push(Cond::Never),
        }
    }
    Ok(Rule { model, conds })
}

fn on_config(cfg: &Value) -> Result<(), String> {
    let mut config = Config { rules: Vec::new(), fallbacks: None };
    if !cfg.is_null() {
        cfg.as_object().ok_or("config: want an object with rules")?;
        match cfg.get("rules") {
            None => {}
            Some(Value::Array(rules)) => {
                for (i, r) in rules.iter().enumerate() {
                    config.rules.push(parse_rule(i, r)?);
                }
            }
            Some(_) => return Err("rules: want an array".into()),
        }
        match cfg.get("fallbacks") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                let mut list = Vec::with_capacity(items.len());
                for it in items {
                    list.push(it.as_str().ok_or("fallbacks: want an array of model names")?.to_string());
                }
                config.fallbacks = Some(list);
            }
            Some(_) => return Err("fallbacks: want an array of model names".into()),
        }
    }
    CONFIG.set(config);
    Ok(())
}

fn holds(c: &Cond, env: &Envelope) -> bool {
    match c {
        Cond::Header(name, want) => env.header_is(name, want),
        Cond::Tag(t) => env.has_tag(t),
        Cond::Max(field, n) => env.get(field).and_then(|v| v.as_f64()).map_or(false, |x| x <= *n),
        Cond::Min(field, n) => env.get(field).and_then(|v| v.as_f64()).map_or(false, |x| x >= *n),
        Cond::Never => false,
    }
}

fn on_request(env: &Envelope) -> Option<Output> {
    CONFIG
        .with(|cfg| {
            let rule = cfg.rules.iter().find(|r| env.serves_model(&r.model) && r.conds.iter().all(|c| holds(c, env)))?;
            let out = Output::route(&rule.model);
            Some(match &cfg.fallbacks {
                Some(f) => out.fallbacks(f),
                None => out,
            })
        })
        .flatten()
}

gw_sdk::plugin! { on_config: on_config, on_request: on_request }
