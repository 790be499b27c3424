//! Result documents (ABI §4): one builder for every hook.

use crate::json::{write_string, Value};

/// A hook's result. `Output::cont()` (or `Output::default()`) with nothing added is returned to
/// the host as `0`, the cheapest "continue, no changes". The document is serialized directly
/// from these fields (no intermediate JSON tree).
///
/// ```ignore
/// Output::route("gpt-4o-mini").fallbacks(&["gpt-4o"]).label("router:cheap")
/// Output::reject(400, "prompt_rejected", "prompt contains a banned phrase")
/// Output::cont().patch_replace("/messages/0/content", "[EMAIL]").redaction("/messages/0/content", "email", 1)
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    action: Option<&'static str>,
    route_model: Option<String>,
    route_deployment: Option<String>,
    route_fallbacks: Option<Vec<String>>,
    reject: Option<(u32, String, String)>,
    respond: Option<(u32, Value)>,
    error: Option<String>,
    set_headers: Vec<(String, String)>,
    remove_headers: Vec<String>,
    patch: Vec<Value>,
    drop: bool,
    insert: Vec<Value>,
    redactions: Vec<(String, String, u32)>,
    labels: Vec<String>,
    state: Option<String>,
    log: Option<String>,
    extra: Vec<(String, Value)>,
}

impl Output {
    /// Continue with no changes (add patches, headers, labels... to change things).
    pub fn cont() -> Output {
        Output::default()
    }

    /// Route the request to a configured model group (on_request only).
    pub fn route(model: &str) -> Output {
        Output { action: Some("route"), route_model: Some(model.to_string()), ..Output::default() }
    }

    /// Reject with an error in the client's wire format; status 400–599 (the host defaults to 403
    /// and `blocked_by_plugin` when `status` is 0 or `code` is empty).
    pub fn reject(status: u32, code: &str, message: &str) -> Output {
        Output {
            action: Some("reject"),
            reject: Some((status, code.to_string(), message.to_string())),
            ..Output::default()
        }
    }

    /// Answer without calling upstream (on_request only, not for streaming requests).
    pub fn respond(status: u32, body: Value) -> Output {
        Output { action: Some("respond"), respond: Some((status, body)), ..Output::default() }
    }

    /// Fail deliberately: a plugin failure with this message (the failure policy applies).
    pub fn error(message: &str) -> Output {
        Output { action: Some("error"), error: Some(message.to_string()), ..Output::default() }
    }

    /// Whether this is a plain "continue, no changes" (returned to the host as 0).
    pub fn is_noop(&self) -> bool {
        *self == Output::default()
    }

    /// Sets any result field (for fields added to ABI v1 after this SDK); written after the
    /// known fields, and replaces an earlier `field` call with the same key.
    pub fn field<V: Into<Value>>(mut self, key: &str, value: V) -> Output {
        let value = value.into();
        match self.extra.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.extra.push((key.to_string(), value)),
        }
        self
    }

    /// Route: one deployment id of the model group.
    pub fn deployment(mut self, id: &str) -> Output {
        self.route_deployment = Some(id.to_string());
        self
    }

    /// Route: replaces the fallback list.
    pub fn fallbacks<S: AsRef<str>>(mut self, models: &[S]) -> Output {
        self.route_fallbacks = Some(models.iter().map(|m| m.as_ref().to_string()).collect());
        self
    }

    /// Sets a header (upstream request headers in on_request, client response headers in on_response).
    pub fn set_header(mut self, name: &str, value: &str) -> Output {
        match self.set_headers.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.set_headers.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// Removes a header.
    pub fn remove_header(mut self, name: &str) -> Output {
        self.remove_headers.push(name.to_string());
        self
    }

    /// Adds an RFC 6902 operation (`{"op":...,"path":...}`) against the body or event data.
    pub fn patch(mut self, op: Value) -> Output {
        self.patch.push(op);
        self
    }

    pub fn patch_replace<V: Into<Value>>(self, path: &str, value: V) -> Output {
        self.patch(Value::object().with("op", "replace").with("path", path).with("value", value))
    }

    pub fn patch_add<V: Into<Value>>(self, path: &str, value: V) -> Output {
        self.patch(Value::object().with("op", "add").with("path", path).with("value", value))
    }

    pub fn patch_remove(self, path: &str) -> Output {
        self.patch(Value::object().with("op", "remove").with("path", path))
    }

    /// Records a redaction for the audit log.
    pub fn redaction(mut self, path: &str, kind: &str, count: u32) -> Output {
        self.redactions.push((path.to_string(), kind.to_string(), count));
        self
    }

    /// Adds a label (spend record and log line).
    pub fn label(mut self, label: &str) -> Output {
        self.labels.push(label.to_string());
        self
    }

    /// on_stream_event: state handed back with the next event (at most 4 KiB).
    pub fn state(mut self, state: &str) -> Output {
        self.state = Some(state.to_string());
        self
    }

    /// A short note logged at info level with the request id.
    pub fn log(mut self, note: &str) -> Output {
        self.log = Some(note.to_string());
        self
    }

    /// on_stream_event: do not pass this event on.
    pub fn drop_event(mut self) -> Output {
        self.drop = true;
        self
    }

    /// on_stream_event: emit an event before this one (`event` None for data-only events).
    pub fn insert_event(mut self, event: Option<&str>, data: Value) -> Output {
        let mut ev = Value::object();
        if let Some(name) = event {
            ev.set("event", name);
        }
        ev.set("data", data);
        self.insert.push(ev);
        self
    }

    /// The result document as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::parse(&self.to_json()).unwrap_or(Value::Null)
    }

    /// Serializes the result document (`{"action":"continue"}` for a no-op).
    pub fn to_json(&self) -> String {
        let mut w = Writer { out: String::with_capacity(128), first: true };
        w.out.push('{');
        if let Some(a) = self.action {
            w.key("action");
            write_string(a, &mut w.out);
        } else if self.is_noop() {
            return String::from("{\"action\":\"continue\"}");
        }
        if let Some(model) = &self.route_model {
            w.key("route");
            w.out.push_str("{\"model\":");
            write_string(model, &mut w.out);
            if let Some(f) = &self.route_fallbacks {
                w.out.push_str(",\"fallbacks\":");
                write_strings(f, &mut w.out);
            }
            if let Some(d) = &self.route_deployment {
                w.out.push_str(",\"deployment\":");
                write_string(d, &mut w.out);
            }
            w.out.push('}');
        }
        if let Some((status, code, message)) = &self.reject {
            w.key("reject");
            w.out.push('{');
            if *status != 0 {
                w.out.push_str("\"status\":");
                w.out.push_str(&status.to_string());
                w.out.push(',');
            }
            if !code.is_empty() {
                w.out.push_str("\"code\":");
                write_string(code, &mut w.out);
                w.out.push(',');
            }
            w.out.push_str("\"message\":");
            write_string(message, &mut w.out);
            w.out.push('}');
        }
        if let Some((status, body)) = &self.respond {
            w.key("respond");
            w.out.push_str("{\"status\":");
            w.out.push_str(&status.to_string());
            w.out.push_str(",\"body\":");
            body.write_json(&mut w.out);
            w.out.push('}');
        }
        if let Some(e) = &self.error {
            w.key("error");
            write_string(e, &mut w.out);
        }
        if !self.set_headers.is_empty() {
            w.key("set_headers");
            w.out.push('{');
            for (i, (k, v)) in self.set_headers.iter().enumerate() {
                if i > 0 {
                    w.out.push(',');
                }
                write_string(k, &mut w.out);
                w.out.push(':');
                write_string(v, &mut w.out);
            }
            w.out.push('}');
        }
        if !self.remove_headers.is_empty() {
            w.key("remove_headers");
            write_strings(&self.remove_headers, &mut w.out);
        }
        if !self.patch.is_empty() {
            w.key("patch");
            write_values(&self.patch, &mut w.out);
        }
        if self.drop {
            w.key("drop");
            w.out.push_str("true");
        }
        if !self.insert.is_empty() {
            w.key("insert");
            write_values(&self.insert, &mut w.out);
        }
        if !self.redactions.is_empty() {
            w.key("redactions");
            w.out.push('[');
            for (i, (path, kind, count)) in self.redactions.iter().enumerate() {
                if i > 0 {
                    w.out.push(',');
                }
                w.out.push_str("{\"path\":");
                write_string(path, &mut w.out);
                w.out.push_str(",\"kind\":");
                write_string(kind, &mut w.out);
                w.out.push_str(",\"count\":");
                w.out.push_str(&count.to_string());
                w.out.push('}');
            }
            w.out.push(']');
        }
        if !self.labels.is_empty() {
            w.key("labels");
            write_strings(&self.labels, &mut w.out);
        }
        if let Some(s) = &self.state {
            w.key("state");
            write_string(s, &mut w.out);
        }
        if let Some(l) = &self.log {
            w.key("log");
            write_string(l, &mut w.out);
        }
        for (k, v) in &self.extra {
            w.key(k);
            v.write_json(&mut w.out);
        }
        w.out.push('}');
        w.out
    }
}

struct Writer {
    out: String,
    first: bool,
}

impl Writer {
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_string(k, &mut self.out);
        self.out.push(':');
    }
}

fn write_strings(items: &[String], out: &mut String) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(s, out);
    }
    out.push(']');
}

fn write_values(items: &[Value], out: &mut String) {
    out.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        v.write_json(out);
    }
    out.push(']');
}

/// What a hook function may return: `Output`, `Option<Output>` (None = continue), `()`
/// (continue), or `Result<T, E>` where an error becomes `{"action":"error","error":...}`.
pub trait IntoOutput {
    fn into_output(self) -> Output;
}

impl IntoOutput for Output {
    fn into_output(self) -> Output {
        self
    }
}

impl IntoOutput for () {
    fn into_output(self) -> Output {
        Output::cont()
    }
}

impl<T: IntoOutput> IntoOutput for Option<T> {
    fn into_output(self) -> Output {
        match self {
            Some(t) => t.into_output(),
            None => Output::cont(),
        }
    }
}

impl<T: IntoOutput, E: std::fmt::Display> IntoOutput for Result<T, E> {
    fn into_output(self) -> Output {
        match self {
            Ok(t) => t.into_output(),
            Err(e) => Output::error(&e.to_string()),
        }
    }
}
