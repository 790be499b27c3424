//! Example plugin (the one in README.md): routes requests tagged `tag` to `model`, and rejects
//! requests with the header x-block: 1. Config: {"tag":"batch","model":"gpt-4o-mini"}.

use gw_sdk::{Envelope, Global, Output, Value};

struct Config {
    tag: String,
    model: String,
}

static CONFIG: Global<Config> = Global::new();

fn on_config(cfg: &Value) -> Result<(), String> {
    match (cfg.get("tag").and_then(Value::as_str), cfg.get("model").and_then(Value::as_str)) {
        (Some(tag), Some(model)) => {
            CONFIG.set(Config { tag: tag.to_string(), model: model.to_string() });
            Ok(())
        }
        _ => Err("example: config needs tag and model".to_string()),
    }
}

fn on_request(env: &Envelope) -> Option<Output> {
    if env.header_is("x-block", "1") {
        return Some(Output::reject(403, "blocked", "blocked by example"));
    }
    CONFIG
        .with(|cfg| {
            if env.has_tag(&cfg.tag) && env.serves_model(&cfg.model) {
                Some(Output::route(&cfg.model).label("example:routed"))
            } else {
                None // continue, no changes
            }
        })
        .flatten()
}

// Exporting a hook subscribes the plugin to it.
gw_sdk::plugin! { on_config: on_config, on_request: on_request }
