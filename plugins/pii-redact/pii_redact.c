/*
 * pii-redact: a Portcullis plugin (gw ABI v1) that replaces e-mail
 * addresses, phone numbers and card numbers (Luhn-checked) with
 * "[EMAIL]", "[PHONE]" and "[CARD]" in requests, responses and streams.
 *
 * Config (optional): {"kinds":["email","phone","card"]} limits what is
 * redacted (default: all three).
 */
#include "portcullis.h"

enum { K_EMAIL, K_PHONE, K_CARD, NKINDS };
static const char *const kind_name[NKINDS] = {"email", "phone", "card"};
static const char *const kind_label[NKINDS] = {"pii:email", "pii:phone", "pii:card"};
static const char *const kind_token[NKINDS] = {"[EMAIL]", "[PHONE]", "[CARD]"};
static int enabled[NKINDS] = {1, 1, 1};

/* Text held back at the end of a stream event, at most this long: a
 * longer trailing token cannot be PII (an e-mail address is at most 254
 * bytes) and is passed on. */
#define MAX_HOLD 256

/* ---- Detection ------------------------------------------------------- */

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_alnum(char c) { return is_digit(c) || is_alpha(c); }
static int is_ascii_local(char c) { return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }
/* Internationalized addresses (RFC 6531): UTF-8 bytes count as letters. */
static int is_local(char c) { return is_ascii_local(c) || (unsigned char)c >= 0x80; }
static int is_domain(char c) { return is_alnum(c) || c == '.' || c == '-' || (unsigned char)c >= 0x80; }
/* Characters held back at the end of a stream event: ASCII only, so text
 * in scripts without spaces is not held back word by word. */
static int is_tok(char c) { return is_ascii_local(c) || c == '@' || c == '(' || c == ')'; }

/* email_at: an address whose local part starts at i; returns its end or 0. */
static size_t email_at(const char *t, size_t n, size_t i) {
    size_t k = i;
    while (k < n && is_local(t[k])) k++;
    if (k == i || k >= n || t[k] != '@' || t[i] == '.') return 0;
    size_t d = k + 1, e = d;
    while (e < n && is_domain(t[e])) e++;
    while (e > d && (t[e - 1] == '.' || t[e - 1] == '-')) e--;
    if (e == d || !is_alnum(t[d])) return 0;
    /* a dot, and a top-level label of two letters or more */
    size_t dot = e;
    while (dot > d && t[dot - 1] != '.') dot--;
    if (dot == d || e - dot < 2) return 0;
    for (size_t j = dot; j < e; j++)
        if (!is_alpha(t[j])) return 0;
    return e;
}

static int luhn(const char *digits, int n) {
    int sum = 0;
    for (int i = 0; i < n; i++) {
        int d = digits[n - 1 - i] - '0';
        if (i & 1) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
    }
    return sum % 10 == 0;
}

/* number_at: a phone or card number starting at i (a digit, '+' or '(').
 * Digits may be separated by single spaces, '-', '.', '(' or ')'. Returns
 * its end and sets *kind, or 0. *run is set to the end of the digit run
 * either way, so a rejected run is not searched again from its middle. */
static size_t number_at(const char *t, size_t n, size_t i, int *kind, size_t *run) {
    char digits[24];
    int nd = 0, plus = 0, group = 0, dots = 0, odd_group = 0;
    size_t j = i, end = i;
    if (t[j] == '+') {
        plus = 1;
        j++;
    }
    while (j < n) {
        char c = t[j];
        if (is_digit(c)) {
            if (nd < 24) digits[nd] = c;
            nd++;
            group++;
            j++;
            end = j;
            continue;
        }
        if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')') {
            /* a separator (or two, like ") ") must lead to a digit */
            size_t k = j + 1;
            if (k < n && (t[k] == ' ' || t[k] == '(' || t[k] == '-') && (c == ')' || c == ' ')) k++;
            if (k < n && is_digit(t[k])) {
                if (group && (group < 2 || group > 4)) odd_group = 1;
                if (c == '.') dots = 1;
                group = 0;
                j = k;
                continue;
            }
        }
        break;
    }
    if (group < 2 || group > 4) odd_group = 1;
    *run = end > i ? end : i + 1;
    if (end < n && (is_alnum(t[end]) || t[end] == '@')) return 0;
    /* with dots, only phone-style groups (555.867.5309), not decimals */
    if (dots && odd_group) return 0;
    if (nd >= 13 && nd <= 19 && !plus && luhn(digits, nd)) {
        *kind = K_CARD;
        return end;
    }
    if ((nd >= 10 || (plus && nd >= 8)) && nd <= 15) {
        *kind = K_PHONE;
        return end;
    }
    return 0;
}

/* is_candidate_block: could an 8-byte block hold the start of a match
 * ('@', a digit, '+' or '(')? */
static int is_candidate_block(uint64_t w) {
    return (pc_hasbetween_(w, '0' - 1, '9' + 1) | pc_hasbyte_(w, '@') | pc_hasbyte_(w, '+') | pc_hasbyte_(w, '(')) != 0;
}

static int number_boundary(char prev) {
    return !is_alnum(prev) && prev != '.' && prev != ',' && prev != '_' && prev != '-' && prev != '+' &&
           (unsigned char)prev < 0x80;
}

/* redact writes text into out with PII replaced, counting by kind, and
 * returns the number of replacements; out is left untouched when there
 * are none (the text is then unchanged). Text without '@', digits, '+'
 * or '(' is skipped 32 or 8 bytes at a time. */
static int redact(const char *t, size_t n, pc_buf *out, int counts[NKINDS]) {
    int total = 0;
    size_t i = 0, copied = 0;
    while (i < n) {
        while (n - i >= 32 && !(is_candidate_block(pc_load8_(t + i)) | is_candidate_block(pc_load8_(t + i + 8)) |
                                is_candidate_block(pc_load8_(t + i + 16)) | is_candidate_block(pc_load8_(t + i + 24))))
            i += 32;
        while (n - i >= 8 && !is_candidate_block(pc_load8_(t + i))) i += 8;
        if (i >= n) break;
        char c = t[i];
        size_t start = i, end = 0, run = 0;
        int kind = -1;
        if (c == '@') {
            if (enabled[K_EMAIL]) {
                /* the local part ends here: find where it starts */
                size_t s = i;
                while (s > copied && is_local(t[s - 1])) s--;
                while (s < i && t[s] == '.') s++;
                if (s < i && (end = email_at(t, n, s))) kind = K_EMAIL, start = s;
            }
        } else if ((is_digit(c) || c == '+' || c == '(') && number_boundary(i ? t[i - 1] : ' ')) {
            end = number_at(t, n, i, &kind, &run);
            if (end && !enabled[kind]) end = 0;
        }
        if (!end) {
            i = run > i ? run : i + 1;
            continue;
        }
        pc_buf_raw(out, t + copied, start - copied);
        pc_buf_cstr(out, kind_token[kind]);
        counts[kind]++;
        total++;
        i = copied = end;
    }
    if (total) pc_buf_raw(out, t + copied, n - copied);
    return total;
}

/* hold_from returns where the text held back for the next event starts:
 * the last token when the text does not end in a space, extended over
 * earlier digit groups ("4111 1111 1111 " + "1111 ..."). */
static size_t hold_from(const char *t, size_t n) {
    size_t i = n;
    while (i > 0 && is_tok(t[i - 1])) i--;
    for (;;) {
        /* ... digits, one space, then the held part (empty, or starting
         * with a digit, '(' or '+') */
        if (i < 2 || t[i - 1] != ' ' || !(is_digit(t[i - 2]) || t[i - 2] == ')')) break;
        if (i < n && !(is_digit(t[i]) || t[i] == '(' || t[i] == '+')) break;
        size_t j = i - 1;
        int numeric = 1;
        while (j > 0 && is_tok(t[j - 1])) {
            char c = t[j - 1];
            if (!(is_digit(c) || c == '-' || c == '.' || c == '(' || c == ')' || c == '+')) numeric = 0;
            j--;
        }
        if (!numeric || j == i - 1) break;
        i = j;
    }
    if (n - i > MAX_HOLD) return n;
    return i;
}

/* ---- Helpers ---------------------------------------------------------- */

static void add_redactions(pc_res *r, const char *path, size_t pathn, const int counts[NKINDS]) {
    for (int k = 0; k < NKINDS; k++) {
        if (!counts[k]) continue;
        pc_res_redaction(r, path, pathn, kind_name[k], counts[k]);
        pc_res_label(r, kind_label[k]);
    }
}

/* redact_field redacts the string value v found at JSON pointer path: a
 * replace patch and redaction records when anything was found. */
static void redact_field(pc_res *r, pc_str v, const char *path, size_t pathn) {
    if (pc_json_type(v) != '"') return;
    int owned;
    pc_str text = pc_json_text(v, &owned);
    pc_buf out = {0, 0, 0};
    int counts[NKINDS] = {0};
    if (redact(text.p, text.n, &out, counts)) {
        pc_res_patch_str(r, "replace", path, pathn, out.p, out.n);
        add_redactions(r, path, pathn, counts);
    }
    pc_buf_free(&out);
    if (owned) free((void *)text.p);
}

/* path builder: prefix + index + suffix */
static size_t mkpath(char *dst, const char *a, size_t i, const char *b, size_t j, const char *c) {
    pc_buf t = {0, 0, 0};
    pc_buf_cstr(&t, a);
    pc_buf_uint(&t, i);
    if (b) {
        pc_buf_cstr(&t, b);
        pc_buf_uint(&t, j);
    }
    if (c) pc_buf_cstr(&t, c);
    size_t n = t.n < 127 ? t.n : 127;
    memcpy(dst, t.p, n);
    dst[n] = 0;
    pc_buf_free(&t);
    return n;
}

/* redact_content redacts a message content (a string, or an array of
 * parts whose text parts have "text") at base ("/messages/3/content"). */
static void redact_content(pc_res *r, pc_str content, const char *pre, size_t idx, const char *post) {
    char path[128];
    if (pc_json_type(content) == '"') {
        size_t n = mkpath(path, pre, idx, 0, 0, post);
        redact_field(r, content, path, n);
        return;
    }
    pc_iter it;
    pc_str part, text;
    if (!pc_json_iter(content, &it) || it.close != ']') return;
    for (size_t j = 0; pc_json_next(&it, 0, &part); j++) {
        if (pc_json_get(part, "text", &text) && pc_json_type(text) == '"') {
            pc_buf pb = {0, 0, 0};
            pc_buf_cstr(&pb, post);
            pc_buf_byte(&pb, '/');
            pc_buf_byte(&pb, 0);
            size_t n = mkpath(path, pre, idx, pb.p, j, "/text");
            pc_buf_free(&pb);
            redact_field(r, text, path, n);
        }
    }
}

/* ---- Hooks ------------------------------------------------------------- */

PC_ON_CONFIG(cfg) {
    pc_str kinds, v;
    pc_iter it;
    if (!pc_json_get(cfg, "kinds", &kinds)) return PC_CONTINUE;
    if (!pc_json_iter(kinds, &it) || it.close != ']') return pc_error("kinds: want an array of email, phone, card");
    for (int k = 0; k < NKINDS; k++) enabled[k] = 0;
    while (pc_json_next(&it, 0, &v)) {
        int found = 0;
        for (int k = 0; k < NKINDS; k++) {
            if (pc_json_str_eq(v, kind_name[k])) {
                enabled[k] = found = 1;
            }
        }
        if (!found) return pc_error("kinds: unknown kind (want email, phone, card)");
    }
    return PC_CONTINUE;
}

PC_ON_REQUEST(env) {
    pc_str body, k, v, msg, content;
    pc_iter it;
    pc_res r;
    pc_res_init(&r);
    pc_envelope(env, 0, 0, 0, &body);
    if (!pc_json_iter(body, &it) || it.close != '}') return PC_CONTINUE;
    while (pc_json_next(&it, &k, &v)) {
        if (pc_json_str_eq(k, "messages")) {
            pc_iter mi;
            if (!pc_json_iter(v, &mi) || mi.close != ']') continue;
            for (size_t i = 0; pc_json_next(&mi, 0, &msg); i++) {
                if (pc_json_get(msg, "content", &content)) redact_content(&r, content, "/messages/", i, "/content");
            }
        } else if (pc_json_str_eq(k, "system")) {
            if (pc_json_type(v) == '"') {
                redact_field(&r, v, "/system", 7);
                continue;
            }
            /* an array of text blocks: /system/j/text */
            pc_iter si;
            pc_str part, text;
            char path[128];
            if (!pc_json_iter(v, &si) || si.close != ']') continue;
            for (size_t j = 0; pc_json_next(&si, 0, &part); j++) {
                if (pc_json_get(part, "text", &text)) redact_field(&r, text, path, mkpath(path, "/system/", j, 0, 0, "/text"));
            }
        } else if (pc_json_str_eq(k, "prompt")) {
            redact_field(&r, v, "/prompt", 7);
        }
    }
    return pc_res_finish(&r);
}

PC_ON_RESPONSE(env) {
    pc_str body, arr, el, v;
    pc_iter it;
    pc_res r;
    pc_res_init(&r);
    if (!pc_envelope(env, 0, 0, 0, &body) || !body.p) return PC_CONTINUE;
    char path[128];
    if (pc_json_get(body, "choices", &arr) && pc_json_iter(arr, &it) && it.close == ']') {
        /* OpenAI chat (message.content) and completions (text) */
        for (size_t i = 0; pc_json_next(&it, 0, &el); i++) {
            pc_str msg;
            if (pc_json_get(el, "message", &msg) && pc_json_get(msg, "content", &v))
                redact_content(&r, v, "/choices/", i, "/message/content");
            else if (pc_json_get(el, "text", &v))
                redact_field(&r, v, path, mkpath(path, "/choices/", i, 0, 0, "/text"));
        }
    } else if (pc_json_get(body, "content", &arr) && pc_json_iter(arr, &it) && it.close == ']') {
        /* Anthropic: content blocks of type text */
        for (size_t j = 0; pc_json_next(&it, 0, &el); j++) {
            if (pc_json_get(el, "type", &v) && pc_json_str_eq(v, "text") && pc_json_get(el, "text", &v))
                redact_field(&r, v, path, mkpath(path, "/content/", j, 0, 0, "/text"));
        }
    }
    return pc_res_finish(&r);
}

/* Streams. The text of each event is the held-back text (the state) plus
 * the event's own text; what may still be the start of an address or
 * number is held back again, the rest is redacted and sent. Held text is
 * flushed before an OpenAI chunk with a finish_reason (into that chunk),
 * before [DONE], before an Anthropic content_block_stop and at the end. */

/* held_state decodes the state (the held-back text); {NULL,0} when none. */
static pc_str held_state(pc_str s) {
    pc_str none = {0, 0};
    if (!s.p) return none;
    return pc_json_string(s);
}

/* flush_text writes t, redacted, into out. */
static int flush_text(const char *t, size_t n, pc_buf *out, int counts[NKINDS]) {
    int found = redact(t, n, out, counts);
    if (!found) pc_buf_raw(out, t, n);
    return found;
}

static void openai_flush_chunk(pc_res *r, pc_str data, uint64_t index, const char *text, size_t n) {
    pc_buf c = {0, 0, 0};
    pc_str v;
    pc_buf_cstr(&c, "{");
    if (data.n && pc_json_get(data, "id", &v)) {
        pc_buf_cstr(&c, "\"id\":");
        pc_buf_str(&c, v);
        pc_buf_byte(&c, ',');
    }
    pc_buf_cstr(&c, "\"object\":\"chat.completion.chunk\",");
    if (data.n && pc_json_get(data, "created", &v)) {
        pc_buf_cstr(&c, "\"created\":");
        pc_buf_str(&c, v);
        pc_buf_byte(&c, ',');
    }
    if (data.n && pc_json_get(data, "model", &v)) {
        pc_buf_cstr(&c, "\"model\":");
        pc_buf_str(&c, v);
        pc_buf_byte(&c, ',');
    }
    pc_buf_cstr(&c, "\"choices\":[{\"index\":");
    pc_buf_uint(&c, index);
    pc_buf_cstr(&c, ",\"delta\":{\"content\":");
    pc_buf_json_str(&c, text, n);
    pc_buf_cstr(&c, "},\"finish_reason\":null}]}");
    pc_res_insert(r, 0, c.p, c.n);
    pc_buf_free(&c);
}

static void anthropic_flush_event(pc_res *r, pc_str index, const char *text, size_t n) {
    pc_buf c = {0, 0, 0};
    pc_buf_cstr(&c, "{\"type\":\"content_block_delta\",\"index\":");
    if (index.n)
        pc_buf_str(&c, index);
    else
        pc_buf_byte(&c, '0');
    pc_buf_cstr(&c, ",\"delta\":{\"type\":\"text_delta\",\"text\":");
    pc_buf_json_str(&c, text, n);
    pc_buf_cstr(&c, "}}");
    pc_res_insert(r, "content_block_delta", c.p, c.n);
    pc_buf_free(&c);
}

/* join_text sets all to the held text then the event's text (a JSON
 * string value; absent when text_v is empty). */
static void join_text(pc_buf *all, const char *held, size_t n, pc_str text_v) {
    pc_buf_raw(all, held, n);
    if (text_v.n) {
        int owned;
        pc_str t = pc_json_text(text_v, &owned);
        pc_buf_raw(all, t.p, t.n);
        if (owned) free((void *)t.p);
    }
}

/* OpenAI streams hold text per choice (n > 1 sends each choice's chunks
 * with its "index"). The state is the held text of choice 0 alone, as is
 * (the common case), or "\x01" then records "index:length:text" for any
 * other set of choices. Held text is a trailing word, never starting with
 * \x01. */
typedef struct {
    uint64_t index;
    pc_buf text;
} held_choice;

typedef struct {
    held_choice *v;
    size_t n, cap;
} held_set;

/* state budget: the SDK's state is at most 4 KiB once escaped; held text
 * is word characters (escaped as is), records add a few bytes each */
#define HELD_BUDGET 3072

static pc_buf *held_get(held_set *h, uint64_t index) {
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].index == index) return &h->v[i].text;
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 4;
        held_choice *v = realloc(h->v, cap * sizeof *v);
        if (!v) return 0;
        h->v = v, h->cap = cap;
    }
    held_choice *c = &h->v[h->n++];
    c->index = index;
    c->text = (pc_buf){0, 0, 0};
    return &c->text;
}

static void held_free(held_set *h) {
    for (size_t i = 0; i < h->n; i++) pc_buf_free(&h->v[i].text);
    free(h->v);
}

static uint64_t parse_uint(const char **p, const char *e) {
    uint64_t v = 0;
    while (*p < e && **p >= '0' && **p <= '9') v = v * 10 + (uint64_t)(*(*p)++ - '0');
    return v;
}

static void held_decode(held_set *h, pc_str s) {
    if (!s.n) return;
    if (s.p[0] != '\x01') {
        pc_buf *b = held_get(h, 0);
        if (b) pc_buf_raw(b, s.p, s.n);
        return;
    }
    const char *p = s.p + 1, *e = s.p + s.n;
    while (p < e) {
        uint64_t index = parse_uint(&p, e);
        if (p >= e || *p++ != ':') return;
        uint64_t n = parse_uint(&p, e);
        if (p >= e || *p++ != ':' || n > (uint64_t)(e - p)) return;
        pc_buf *b = held_get(h, index);
        if (b) pc_buf_raw(b, p, (size_t)n);
        p += n;
    }
}

/* held_size is what the encoded state takes so far. */
static size_t held_size(held_set *h) {
    size_t n = 1;
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].text.n) n += h->v[i].text.n + 24;
    return n;
}

static void held_encode(pc_res *r, held_set *h) {
    size_t live = 0, only0 = 1;
    for (size_t i = 0; i < h->n; i++) {
        if (!h->v[i].text.n) continue;
        live++;
        if (h->v[i].index != 0) only0 = 0;
    }
    if (!live) return;
    if (only0) {
        pc_buf *b = held_get(h, 0);
        pc_res_state(r, b->p, b->n);
        return;
    }
    pc_buf e = {0, 0, 0};
    pc_buf_byte(&e, '\x01');
    for (size_t i = 0; i < h->n; i++) {
        if (!h->v[i].text.n) continue;
        pc_buf_uint(&e, h->v[i].index);
        pc_buf_byte(&e, ':');
        pc_buf_uint(&e, h->v[i].text.n);
        pc_buf_byte(&e, ':');
        pc_buf_raw(&e, h->v[i].text.p, h->v[i].text.n);
    }
    pc_res_state(r, e.p, e.n);
    pc_buf_free(&e);
}

/* flush_held sends every choice's held text, redacted, in chunks inserted
 * before the current event (data: the chunk to copy id/model from). */
static void flush_held(pc_res *r, held_set *h, pc_str data) {
    for (size_t i = 0; i < h->n; i++) {
        pc_buf *t = &h->v[i].text;
        if (!t->n) continue;
        pc_buf out = {0, 0, 0};
        int counts[NKINDS] = {0};
        flush_text(t->p, t->n, &out, counts);
        openai_flush_chunk(r, data, h->v[i].index, out.p, out.n);
        add_redactions(r, "/choices/0/delta/content", 24, counts);
        pc_buf_free(&out);
        t->n = 0;
    }
}

/* openai_choice redacts one choice of a chunk (k: its position in
 * "choices", for the patch path; v: the choice object). */
static void openai_choice(pc_res *r, held_set *h, pc_str data, size_t k, pc_str v) {
    pc_str fr, c, ix;
    uint64_t index = k;
    if (pc_json_get(v, "index", &ix) && pc_json_type(ix) == '0' && pc_json_int(ix) >= 0) index = (uint64_t)pc_json_int(ix);
    int finished = pc_json_get(v, "finish_reason", &fr) && pc_json_type(fr) == '"';
    pc_str text_v = {0, 0};
    int has_text = 0, into_delta = 0;
    if (pc_json_path(v, "delta.content", &c) && pc_json_type(c) == '"') {
        text_v = c, has_text = 1;
    } else if (finished && pc_json_get(v, "delta", &c) && pc_json_type(c) == '{') {
        /* a finish chunk with a delta: the held text goes into it */
        into_delta = 1;
    }
    if (!has_text && !finished) return;
    pc_buf *held = held_get(h, index);
    if (!held) return;
    pc_buf all = {0, 0, 0};
    size_t had_held = held->n;
    join_text(&all, held->p, held->n, text_v);
    held->n = 0;
    size_t cut = finished ? all.n : hold_from(all.p, all.n);
    if (cut < all.n && held_size(h) + (all.n - cut) + 24 > HELD_BUDGET) cut = all.n; /* no room to hold: send */
    pc_buf out = {0, 0, 0};
    int counts[NKINDS] = {0};
    int found = flush_text(all.p, cut, &out, counts);
    char path[128];
    size_t pn = mkpath(path, "/choices/", k, 0, 0, "/delta/content");
    if (has_text || into_delta) {
        /* the event goes out unchanged when nothing was held, held back or
         * replaced; else its text is replaced ("add" also replaces: a
         * finish chunk's delta may lack content) */
        int unchanged = !had_held && cut == all.n && !found;
        if (!unchanged && (text_v.n || out.n))
            pc_res_patch_str(r, text_v.n ? "replace" : "add", path, pn, out.p ? out.p : "", out.n);
        add_redactions(r, path, pn, counts);
    } else if (out.n) {
        /* finished without a delta: the held text goes in a chunk before */
        openai_flush_chunk(r, data, index, out.p, out.n);
        add_redactions(r, "/choices/0/delta/content", 24, counts);
    }
    if (cut < all.n) pc_buf_raw(held, all.p + cut, all.n - cut);
    pc_buf_free(&out);
    pc_buf_free(&all);
}

PC_ON_STREAM_EVENT(env) {
    pc_str data, v, text_v = {0, 0};
    pc_res r;
    pc_res_init(&r);
    static const char *const keys[] = {"state", "event"};
    pc_str f[2];
    pc_envelope(env, keys, f, 2, &data);
    pc_str held = held_state(f[0]);
    pc_str ev = f[1];

    if (!ev.p) {
        /* OpenAI chat: every choice of the chunk, text held per choice */
        held_set h = {0, 0, 0};
        held_decode(&h, held);
        free((void *)held.p);
        pc_str arr, el;
        pc_iter it;
        if (pc_json_str_eq(data, "[DONE]")) {
            pc_str none = {0, 0};
            flush_held(&r, &h, none);
        } else if (pc_json_get(data, "choices", &arr) && pc_json_iter(arr, &it) && it.close == ']') {
            for (size_t k = 0; pc_json_next(&it, 0, &el); k++) openai_choice(&r, &h, data, k, el);
        }
        held_encode(&r, &h);
        held_free(&h);
        return pc_res_finish(&r);
    }

    /* Anthropic: one text block at a time */
    const char *text_path = 0;
    int flush = 0; /* send everything, hold nothing */
    pc_str index = {0, 0};
    if (pc_json_str_eq(ev, "content_block_delta")) {
        if (pc_json_path(data, "delta.text", &v) && pc_json_type(v) == '"') {
            text_v = v;
            text_path = "/delta/text";
        }
    } else if (pc_json_str_eq(ev, "content_block_stop") || pc_json_str_eq(ev, "message_stop") ||
               pc_json_str_eq(ev, "message_delta")) {
        flush = 1;
        pc_json_get(data, "index", &index);
    }

    if (!text_path && !flush) {
        /* nothing to redact here: carry the held text over */
        if (held.n) pc_res_state(&r, held.p, held.n);
        free((void *)held.p);
        return pc_res_finish(&r);
    }

    pc_buf all = {0, 0, 0};
    size_t had_held = held.n;
    join_text(&all, held.p, held.n, text_v);
    free((void *)held.p);
    size_t cut = flush ? all.n : hold_from(all.p, all.n);
    pc_buf out = {0, 0, 0};
    int counts[NKINDS] = {0};
    int found = flush_text(all.p, cut, &out, counts);

    if (text_path) {
        size_t pn = strlen(text_path);
        /* the event goes out unchanged when nothing was held, held back
         * or replaced; else its text is replaced */
        int unchanged = !had_held && cut == all.n && !found;
        if (!unchanged && (text_v.n || out.n))
            pc_res_patch_str(&r, "replace", text_path, pn, out.p ? out.p : "", out.n);
        add_redactions(&r, text_path, pn, counts);
    } else if (out.n) {
        anthropic_flush_event(&r, index, out.p, out.n);
        add_redactions(&r, "/delta/text", 11, counts);
    }
    if (cut < all.n) pc_res_state(&r, all.p + cut, all.n - cut);
    pc_buf_free(&out);
    pc_buf_free(&all);
    return pc_res_finish(&r);
}

PC_ON_STREAM_END(env) {
    static const char *const keys[] = {"state", "complete", "endpoint"};
    pc_str f[3];
    pc_json_fields(env, keys, f, 3);
    pc_str held = held_state(f[0]), ep = f[2];
    pc_res r;
    pc_res_init(&r);
    pc_str none = {0, 0};
    if (held.n && pc_json_type(f[1]) == 't') {
        if (pc_json_str_eq(ep, "messages")) {
            pc_buf out = {0, 0, 0};
            int counts[NKINDS] = {0};
            flush_text(held.p, held.n, &out, counts);
            anthropic_flush_event(&r, none, out.p, out.n);
            add_redactions(&r, "/delta/text", 11, counts);
            pc_buf_free(&out);
        } else {
            held_set h = {0, 0, 0};
            held_decode(&h, held);
            flush_held(&r, &h, none);
            held_free(&h);
        }
    }
    free((void *)held.p);
    return pc_res_finish(&r);
}
