//! Input envelopes (ABI §3): typed accessors over a lazy view of the envelope JSON. Nothing is
//! parsed until asked for: top-level members are indexed on first use, one by one, so reading
//! `headers` or `tags` never scans the body that the host sends after them. Unknown fields stay
//! reachable with [`Envelope::get`], so fields added within ABI v1 never break a plugin.

use crate::view::{bytes_eq, Json, Key, Kind, Members};
use std::borrow::Cow;
use std::cell::RefCell;

/// One hook's input envelope, borrowing the host's input buffer.
pub struct Envelope<'a> {
    root: Json<'a>,
    index: RefCell<Index<'a>>,
}

/// The envelope fields of ABI v1, found by [`known_field`] without loops.
const KNOWN: [&str; 20] = [
    "v", "id", "hook", "path", "tags", "body", "data", "model", "index", "event", "state", "models", "status",
    "events", "headers", "endpoint", "complete", "principal", "prompt_chars", "estimated_cost_usd",
];

/// The index of `key` in KNOWN: a switch on the length, then word compares (no loops, which
/// matters under the gateway's deadline mode where each loop iteration costs a check).
fn known_field(key: &[u8]) -> Option<usize> {
    let is = |c: usize| bytes_eq(key, KNOWN[c].as_bytes());
    let pick = |c: usize| if is(c) { Some(c) } else { None };
    match key.len() {
        1 => pick(0),
        2 => pick(1),
        4 => pick(2).or_else(|| pick(3)).or_else(|| pick(4)).or_else(|| pick(5)).or_else(|| pick(6)),
        5 => pick(7).or_else(|| pick(8)).or_else(|| pick(9)).or_else(|| pick(10)),
        6 => pick(11).or_else(|| pick(12)).or_else(|| pick(13)),
        7 => pick(14),
        8 => pick(15).or_else(|| pick(16)),
        9 => pick(17),
        12 => pick(18),
        18 => pick(19),
        _ => None,
    }
}

/// Top-level members seen so far, and where to resume scanning.
struct Index<'a> {
    /// Value starts of the known fields seen (bit i of `found` set).
    known: [usize; 20],
    found: u32,
    /// Members that are not known fields.
    others: Vec<(Key<'a>, Json<'a>)>,
    rest: Members<'a>,
    done: bool,
}

/// A piece of prompt text in the request body, with the JSON pointer (relative to the body, as
/// patches are) where it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct Text<'a> {
    pub path: String,
    pub text: Cow<'a, str>,
}

fn or_empty(s: Option<Cow<str>>) -> Cow<str> {
    s.unwrap_or(Cow::Borrowed(""))
}

impl<'a> Envelope<'a> {
    /// A view of the envelope JSON in `buf`.
    pub fn new(buf: &'a [u8]) -> Envelope<'a> {
        let root = Json::new(buf);
        Envelope {
            root,
            index: RefCell::new(Index { known: [0; 20], found: 0, others: Vec::new(), rest: root.members(), done: false }),
        }
    }

    /// Same as [`Envelope::new`] for text (handy in native unit tests of a plugin).
    pub fn parse(text: &'a str) -> Envelope<'a> {
        Envelope::new(text.as_bytes())
    }

    /// The whole envelope as a JSON view.
    pub fn root(&self) -> Json<'a> {
        self.root
    }

    /// Any top-level member of the envelope (first occurrence). Members are indexed as they are
    /// scanned, so each is read once per call whatever the number of lookups.
    pub fn get(&self, key: &str) -> Option<Json<'a>> {
        let want = known_field(key.as_bytes());
        let mut idx = self.index.borrow_mut();
        match want {
            Some(w) if idx.found & (1 << w) != 0 => return Some(self.root.at_offset(idx.known[w])),
            Some(_) => {}
            None => {
                if let Some((_, v)) = idx.others.iter().find(|(k, _)| k.eq(key)) {
                    return Some(*v);
                }
            }
        }
        if idx.done {
            return None;
        }
        while let Some((k, v)) = idx.rest.next_raw() {
            let id = if k.escaped { k.as_str().and_then(|d| known_field(d.as_bytes())) } else { known_field(k.inner) };
            match id {
                Some(id) => {
                    if idx.found & (1 << id) == 0 {
                        idx.found |= 1 << id;
                        idx.known[id] = v.offset();
                        if want == Some(id) {
                            return Some(v);
                        }
                    }
                }
                None => {
                    idx.others.push((k, v));
                    if want.is_none() && k.eq(key) {
                        return Some(v);
                    }
                }
            }
        }
        idx.done = true;
        None
    }

    fn str_field(&self, key: &str) -> Cow<'a, str> {
        or_empty(self.get(key).and_then(|v| v.as_str()))
    }

    /// `"v"`, the ABI major version (1).
    pub fn version(&self) -> i64 {
        self.get("v").and_then(|v| v.as_i64()).unwrap_or(0)
    }

    /// `"hook"`: on_request, on_response, on_stream_event or on_stream_end.
    pub fn hook(&self) -> Cow<'a, str> {
        self.str_field("hook")
    }

    /// The gateway request id.
    pub fn id(&self) -> Cow<'a, str> {
        self.str_field("id")
    }

    /// chat | completions | embeddings | messages.
    pub fn endpoint(&self) -> Cow<'a, str> {
        self.str_field("endpoint")
    }

    pub fn path(&self) -> Cow<'a, str> {
        self.str_field("path")
    }

    /// The model the client asked for.
    pub fn model(&self) -> Cow<'a, str> {
        self.str_field("model")
    }

    fn header_view(&self, name: &str) -> Option<Json<'a>> {
        let headers = self.get("headers")?;
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            headers.get(&name.to_ascii_lowercase())
        } else {
            headers.get(name)
        }
    }

    /// A request header by name (matched lower-cased, as the host sends them).
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.header_view(name)?.as_str()
    }

    /// Whether header `name` is exactly `value` (no allocation).
    pub fn header_is(&self, name: &str, value: &str) -> bool {
        self.header_view(name).map_or(false, |v| v.str_eq(value))
    }

    /// `principal.<key>` (key_alias, team_id, user_id).
    pub fn principal(&self, key: &str) -> Option<Cow<'a, str>> {
        self.get("principal")?.get(key)?.as_str()
    }

    /// The request's routing tags.
    pub fn tags(&self) -> Vec<Cow<'a, str>> {
        self.get("tags").map_or(Vec::new(), |t| t.items().filter_map(|v| v.as_str()).collect())
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.get("tags").map_or(false, |t| t.contains_str(tag))
    }

    /// The model groups this gateway serves.
    pub fn models(&self) -> Vec<Cow<'a, str>> {
        self.get("models").map_or(Vec::new(), |t| t.items().filter_map(|v| v.as_str()).collect())
    }

    pub fn serves_model(&self, model: &str) -> bool {
        self.get("models").map_or(false, |m| m.contains_str(model))
    }

    /// Characters of message text (None when absent).
    pub fn prompt_chars(&self) -> Option<f64> {
        self.get("prompt_chars")?.as_f64()
    }

    /// The request or response body (on_request, on_response).
    pub fn body(&self) -> Option<Json<'a>> {
        self.get("body")
    }

    /// on_response: the upstream status.
    pub fn status(&self) -> Option<i64> {
        self.get("status")?.as_i64()
    }

    /// on_stream_event: 0-based event number.
    pub fn index(&self) -> Option<i64> {
        self.get("index")?.as_i64()
    }

    /// on_stream_event: the SSE event name (None for data-only events).
    pub fn event(&self) -> Option<Cow<'a, str>> {
        self.get("event")?.as_str()
    }

    /// on_stream_event: the event data (an object, or a string such as "[DONE]").
    pub fn data(&self) -> Option<Json<'a>> {
        self.get("data")
    }

    /// on_stream_event / on_stream_end: the state this plugin returned for the previous event.
    pub fn state(&self) -> Option<Cow<'a, str>> {
        self.get("state")?.as_str()
    }

    /// on_stream_end: number of events seen.
    pub fn events(&self) -> Option<i64> {
        self.get("events")?.as_i64()
    }

    /// on_stream_end: false when the stream was cut.
    pub fn complete(&self) -> bool {
        self.get("complete").and_then(|v| v.as_bool()).unwrap_or(false)
    }

    /// The prompt text of the request body; see [`body_texts`].
    pub fn texts(&self) -> Vec<Text<'a>> {
        self.body().map_or(Vec::new(), body_texts)
    }
}

/// The prompt text of a request body, whatever its wire format: OpenAI chat
/// `messages[].content` (string, or `text` parts), Anthropic `system` and `messages[].content`
/// (string or `text` blocks), completions `prompt` and embeddings `input` (string or array of
/// strings). Paths are JSON pointers relative to the body; texts come in document order.
pub fn body_texts(body: Json) -> Vec<Text> {
    let mut out = Vec::new();
    // One pass over the body's members.
    let mut members = body.members();
    while let Some((k, v)) = members.next_raw() {
        if k.eq("messages") {
            for (i, m) in v.items().enumerate() {
                content_texts(m.get("content"), &format!("/messages/{}/content", i), &mut out);
            }
        } else if k.eq("system") {
            content_texts(Some(v), "/system", &mut out);
        } else if k.eq("prompt") || k.eq("input") {
            let key = if k.eq("prompt") { "prompt" } else { "input" };
            match v.kind() {
                Some(Kind::String) => out.extend(v.as_str().map(|text| Text { path: format!("/{}", key), text })),
                Some(Kind::Array) => {
                    for (i, it) in v.items().enumerate() {
                        if let Some(text) = it.as_str() {
                            out.push(Text { path: format!("/{}/{}", key, i), text });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn content_texts<'a>(content: Option<Json<'a>>, path: &str, out: &mut Vec<Text<'a>>) {
    let content = match content {
        Some(c) => c,
        None => return,
    };
    match content.kind() {
        Some(Kind::String) => out.extend(content.as_str().map(|text| Text { path: path.to_string(), text })),
        Some(Kind::Array) => {
            for (j, part) in content.items().enumerate() {
                if let Some(text) = part.get("text").and_then(|t| t.as_str()) {
                    out.push(Text { path: format!("{}/{}/text", path, j), text });
                }
            }
        }
        _ => {}
    }
}
