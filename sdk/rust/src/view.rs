//! A lazy, zero-copy view of JSON text: nothing is parsed until asked for, and only the part
//! asked for. Envelopes are read through it, so a hook that looks at three fields of a request
//! never pays for parsing the (possibly large) body. Strings without escapes are borrowed.
//!
//! The view trusts its input to be JSON (the host only sends valid documents); on malformed
//! input the accessors return `None` rather than panicking. Within an object, a key that appears
//! twice resolves to its first occurrence.

use crate::json::{self, Value};
use std::borrow::Cow;

/// The kind of a JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// A JSON value inside a byte buffer, read on demand.
#[derive(Clone, Copy)]
pub struct Json<'a> {
    buf: &'a [u8],
    /// Index of the value's first byte.
    start: usize,
}

impl<'a> std::fmt::Debug for Json<'a> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.raw())
    }
}

#[inline]
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    // Test before looping: compact JSON (what the host sends) then never enters the loop.
    if i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
    }
    i
}

/// Index after the string literal whose opening quote is at `b[i]`.
#[inline]
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    scan_string(b, i).map(|(end, _)| end)
}

/// Index after the string literal whose opening quote is at `b[i]`, and whether it has escapes.
///
/// Reads 8 bytes per step and jumps straight to the first quote or backslash in a word, so a
/// string costs about len/8 loop iterations: under the gateway's deadline mode (wazero's
/// CloseOnContextDone), every loop iteration of a guest is a check, so iterations are what a
/// call costs.
#[inline]
fn scan_string(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    i += 1;
    let mut escaped = false;
    // The first word outside the loop: a short string (most keys and values) costs no loop
    // iteration at all.
    if i + 8 <= b.len() {
        let m = quote_or_backslash(load8(b, i));
        if m == 0 {
            i += 8;
        } else {
            let j = i + (m.trailing_zeros() / 8) as usize;
            if b[j] == b'"' {
                return Some((j + 1, false));
            }
            escaped = true;
            i = j + 2;
        }
    }
    while i + 8 <= b.len() {
        let m = quote_or_backslash(load8(b, i));
        if m == 0 {
            i += 8;
            continue;
        }
        let j = i + (m.trailing_zeros() / 8) as usize;
        if b[j] == b'"' {
            return Some((j + 1, escaped));
        }
        escaped = true;
        i = j + 2;
    }
    while i < b.len() {
        match b[i] {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is zero; the lowest set bit is exact (later ones may be
/// false positives), which is all that trailing_zeros needs.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Marks the quotes and backslashes of a word (lowest mark exact).
#[inline]
fn quote_or_backslash(w: u64) -> u64 {
    zero_bytes(w ^ (LO * b'"' as u64)) | zero_bytes(w ^ (LO * b'\\' as u64))
}

/// Marks the bytes that end a number or literal: ',' '}' ']' and whitespace (lowest mark exact).
#[inline]
fn delimiters(w: u64) -> u64 {
    let f = w | (LO * 0x20); // folds ']' onto '}'
    zero_bytes(w ^ (LO * b',' as u64)) | zero_bytes(f ^ (LO * b'}' as u64)) | (w.wrapping_sub(LO * 0x21) & !w & HI)
}

/// Little-endian load of up to 8 bytes (`a.len() <= 8`), without a loop.
#[inline]
pub(crate) fn load_small(a: &[u8]) -> u64 {
    let n = a.len();
    let mut v: u64 = 0;
    let mut i = 0;
    if n & 4 != 0 {
        v = u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as u64;
        i = 4;
    }
    if n & 2 != 0 {
        v |= (u16::from_le_bytes([a[i], a[i + 1]]) as u64) << (8 * i);
        i += 2;
    }
    if n & 1 != 0 {
        v |= (a[i] as u64) << (8 * i);
    }
    if n == 8 {
        v = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    }
    v
}

#[inline]
fn load8(a: &[u8], i: usize) -> u64 {
    u64::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6], a[i + 7]])
}

/// Byte equality without loops up to 16 bytes (keys, model names), 8 bytes per step beyond:
/// under the gateway's deadline mode every loop iteration costs a check.
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n <= 8 {
        return load_small(a) == load_small(b);
    }
    let mut i = 0;
    while i + 8 < n {
        if load8(a, i) != load8(b, i) {
            return false;
        }
        i += 8;
    }
    // The last 8 bytes, overlapping what was compared.
    load8(a, n - 8) == load8(b, n - 8)
}

/// Index after the value starting at `b[i]` (no recursion: containers are skipped by counting
/// brackets outside strings).
pub(crate) fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            // b | 0x20 folds '[' onto '{' and ']' onto '}' (no other byte lands there).
            let hz = zero_bytes;
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                // Jump to the next quote or bracket, 8 bytes per step.
                if j + 8 <= b.len() {
                    let w = load8(b, j);
                    let f = w | (LO * 0x20);
                    let m = hz(w ^ (LO * b'"' as u64)) | hz(f ^ (LO * b'{' as u64)) | hz(f ^ (LO * b'}' as u64));
                    if m == 0 {
                        j += 8;
                        continue;
                    }
                    j += (m.trailing_zeros() / 8) as usize;
                }
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // Literal or number: up to the next delimiter, a word at a time.
            let mut j = i;
            while j + 8 <= b.len() {
                let m = delimiters(load8(b, j));
                if m != 0 {
                    j += (m.trailing_zeros() / 8) as usize;
                    return if j == i { None } else { Some(j) };
                }
                j += 8;
            }
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            if j == i {
                None
            } else {
                Some(j)
            }
        }
    }
}

/// Whether the string literal at `b[i]` (opening quote) equals `s`, without allocating when it
/// has no escapes.
fn string_eq(b: &[u8], i: usize, s: &str) -> bool {
    match scan_string(b, i) {
        None => false,
        Some((end, false)) => bytes_eq(&b[i + 1..end - 1], s.as_bytes()),
        Some(_) => json::parse_string_at(b, i).map_or(false, |(decoded, _)| decoded == s),
    }
}

/// Iterator over an array's elements.
pub struct Items<'a> {
    buf: &'a [u8],
    /// Next element's first byte, or None when done.
    next: Option<usize>,
}

impl<'a> Iterator for Items<'a> {
    type Item = Json<'a>;
    fn next(&mut self) -> Option<Json<'a>> {
        let i = self.next.take()?;
        let b = self.buf;
        let end = skip_value(b, i)?;
        let j = skip_ws(b, end);
        if b.get(j) == Some(&b',') {
            self.next = Some(skip_ws(b, j + 1));
        }
        Some(Json { buf: b, start: i })
    }
}

/// Iterator over an object's members (key, value), in document order. A member's value is
/// skipped only when moving past it, so finding a key never scans that key's value.
pub struct Members<'a> {
    buf: &'a [u8],
    /// Next member's first byte, or None when done.
    next: Option<usize>,
    /// The current member's value, not skipped yet.
    pending: Option<usize>,
}

impl<'a> Members<'a> {
    /// Like `next`, but gives the key as a view (no decoding).
    pub(crate) fn next_raw(&mut self) -> Option<(Key<'a>, Json<'a>)> {
        let b = self.buf;
        if let Some(v) = self.pending.take() {
            let vend = skip_value(b, v)?;
            let j = skip_ws(b, vend);
            if b.get(j) == Some(&b',') {
                self.next = Some(skip_ws(b, j + 1));
            }
        }
        let i = self.next.take()?;
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (kend, escaped) = scan_string(b, i)?;
        let c = skip_ws(b, kend);
        if b.get(c) != Some(&b':') {
            return None;
        }
        let v = skip_ws(b, c + 1);
        if v >= b.len() {
            return None;
        }
        self.pending = Some(v);
        Some((Key { inner: &b[i + 1..kend - 1], escaped, lit: Json { buf: b, start: i } }, Json { buf: b, start: v }))
    }
}

/// An object key as found in the buffer: compared without decoding unless it has escapes.
#[derive(Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) inner: &'a [u8],
    pub(crate) escaped: bool,
    lit: Json<'a>,
}

impl<'a> Key<'a> {
    #[inline]
    pub(crate) fn eq(&self, s: &str) -> bool {
        if self.escaped {
            self.lit.str_eq(s)
        } else {
            bytes_eq(self.inner, s.as_bytes())
        }
    }

    pub(crate) fn as_str(&self) -> Option<Cow<'a, str>> {
        self.lit.as_str()
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = (Cow<'a, str>, Json<'a>);
    fn next(&mut self) -> Option<(Cow<'a, str>, Json<'a>)> {
        let (k, v) = self.next_raw()?;
        Some((k.as_str()?, v))
    }
}

impl<'a> Json<'a> {
    /// A view of the JSON document in `buf` (leading whitespace skipped).
    pub fn new(buf: &'a [u8]) -> Json<'a> {
        Json { buf, start: skip_ws(buf, 0) }
    }

    /// Where the value starts in its buffer.
    pub(crate) fn offset(&self) -> usize {
        self.start
    }

    /// The value starting at `start` in the same buffer.
    pub(crate) fn at_offset(&self, start: usize) -> Json<'a> {
        Json { buf: self.buf, start }
    }

    /// The value's kind (None for malformed input).
    pub fn kind(&self) -> Option<Kind> {
        Some(match *self.buf.get(self.start)? {
            b'n' => Kind::Null,
            b't' | b'f' => Kind::Bool,
            b'"' => Kind::String,
            b'[' => Kind::Array,
            b'{' => Kind::Object,
            b'-' | b'0'..=b'9' => Kind::Number,
            _ => return None,
        })
    }

    /// The value's JSON text.
    pub fn raw(&self) -> &'a str {
        let end = skip_value(self.buf, self.start).unwrap_or(self.start);
        std::str::from_utf8(&self.buf[self.start..end]).unwrap_or("")
    }

    pub fn is_null(&self) -> bool {
        self.kind() == Some(Kind::Null)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.buf.get(self.start)? {
            b't' => Some(true),
            b'f' => Some(false),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        // Fast path, one loop: an integer of at most 15 digits (what envelopes carry).
        let b = self.buf;
        let mut i = self.start;
        let neg = b.get(i) == Some(&b'-');
        if neg {
            i += 1;
        }
        let first = i;
        let mut n: u64 = 0;
        while i < b.len() && b[i].is_ascii_digit() && i - first < 16 {
            n = n * 10 + (b[i] - b'0') as u64;
            i += 1;
        }
        let digits = i - first;
        let next = b.get(i).copied().unwrap_or(b' ');
        if (1..=15).contains(&digits) && !(digits > 1 && b[first] == b'0') && !matches!(next, b'.' | b'e' | b'E' | b'0'..=b'9')
        {
            let n = n as f64;
            return Some(if neg { -n } else { n });
        }
        if self.kind()? != Kind::Number {
            return None;
        }
        json::parse_number_at(self.buf, self.start)
    }

    /// The number as an integer when it is one exactly (within ±2^53).
    pub fn as_i64(&self) -> Option<i64> {
        let n = self.as_f64()?;
        if n.fract() == 0.0 && n.abs() <= 9007199254740992.0 {
            Some(n as i64)
        } else {
            None
        }
    }

    /// The string, borrowed from the buffer when it has no escapes.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        if self.buf.get(self.start)? != &b'"' {
            return None;
        }
        let (end, escaped) = scan_string(self.buf, self.start)?;
        if !escaped {
            return std::str::from_utf8(&self.buf[self.start + 1..end - 1]).ok().map(Cow::Borrowed);
        }
        json::parse_string_at(self.buf, self.start).map(|(s, _)| Cow::Owned(s))
    }

    /// Whether this is a string equal to `s` (no allocation unless the string has escapes).
    pub fn str_eq(&self, s: &str) -> bool {
        self.buf.get(self.start) == Some(&b'"') && string_eq(self.buf, self.start, s)
    }

    /// The elements of an array (empty for other kinds).
    pub fn items(&self) -> Items<'a> {
        let mut next = None;
        if self.buf.get(self.start) == Some(&b'[') {
            let i = skip_ws(self.buf, self.start + 1);
            if self.buf.get(i).map_or(false, |c| *c != b']') {
                next = Some(i);
            }
        }
        Items { buf: self.buf, next }
    }

    /// The members of an object (empty for other kinds).
    pub fn members(&self) -> Members<'a> {
        let mut next = None;
        if self.buf.get(self.start) == Some(&b'{') {
            let i = skip_ws(self.buf, self.start + 1);
            if self.buf.get(i).map_or(false, |c| *c != b'}') {
                next = Some(i);
            }
        }
        Members { buf: self.buf, next, pending: None }
    }

    /// The member `key` of an object (first occurrence).
    pub fn get(&self, key: &str) -> Option<Json<'a>> {
        let mut it = self.members();
        while let Some((k, v)) = it.next_raw() {
            if k.eq(key) {
                return Some(v);
            }
        }
        None
    }

    /// Element `i` of an array.
    pub fn at(&self, i: usize) -> Option<Json<'a>> {
        self.items().nth(i)
    }

    /// Number of elements (array) or members (object); 0 for other kinds.
    pub fn len(&self) -> usize {
        match self.kind() {
            Some(Kind::Array) => self.items().count(),
            Some(Kind::Object) => {
                let mut it = self.members();
                let mut n = 0;
                while it.next_raw().is_some() {
                    n += 1;
                }
                n
            }
            _ => 0,
        }
    }

    /// Whether this is an array with a string element equal to `s`.
    pub fn contains_str(&self, s: &str) -> bool {
        self.items().any(|v| v.str_eq(s))
    }

    /// Follows an RFC 6901 JSON pointer ("" is the value itself).
    pub fn pointer(&self, ptr: &str) -> Option<Json<'a>> {
        if ptr.is_empty() {
            return Some(*self);
        }
        if !ptr.starts_with('/') {
            return None;
        }
        let mut cur = *self;
        for raw in ptr[1..].split('/') {
            let token = if raw.contains('~') { raw.replace("~1", "/").replace("~0", "~") } else { raw.to_string() };
            cur = match cur.kind()? {
                Kind::Object => cur.get(&token)?,
                Kind::Array => {
                    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
                        return None;
                    }
                    cur.at(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Parses this value (and everything in it) into an owned [`Value`].
    pub fn to_value(&self) -> Result<Value, json::ParseError> {
        json::parse_value_at(self.buf, self.start)
    }
}
