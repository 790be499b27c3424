/*
 * portcullis.h - the C SDK for Portcullis plugins (gw ABI v1, see ../ABI.md).
 *
 * One header, no dependencies beyond wasi-libc (malloc, free, memcpy,
 * memcmp, strlen). Include it in exactly one .c file of the plugin: it
 * defines the exports gw_abi_v1, gw_alloc and gw_free. (Other files of the
 * same plugin define PC_NO_EXPORTS before including it.)
 *
 * Build (Debian 12: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wl,--strip-all \
 *         -I sdk/c -o plugin.wasm plugin.c
 *
 * A hook is a function declared with one of the PC_ON_* macros. The macro
 * exports it under the ABI name, hands it the input envelope as a pc_str
 * (valid during the call; the SDK frees it afterwards) and returns what
 * the function returns: PC_CONTINUE (0), or a result built with pc_res_*.
 *
 *   PC_ON_REQUEST(env) {
 *       pc_str model;
 *       if (pc_json_path(env, "body.model", &model) && pc_json_str_eq(model, "gpt-4"))
 *           return pc_reject(403, "model_retired", "gpt-4 is retired");
 *       return PC_CONTINUE;
 *   }
 *
 * JSON: pc_json_* functions scan JSON text in place (no allocation, no
 * tree): find an object member or a dotted path, iterate arrays and
 * objects, compare and unescape strings. pc_buf builds output JSON.
 */
#ifndef PORTCULLIS_H
#define PORTCULLIS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PC_EXPORT(name) __attribute__((export_name(name)))
#define PC_IMPORT(module, name) __attribute__((import_module(module), import_name(name)))
#define PC_UNUSED __attribute__((unused))

/* ---- Types ------------------------------------------------------------ */

/* pc_str is a span of bytes, not NUL-terminated. For JSON values it spans
 * the value's text: a string value includes its quotes. */
typedef struct {
    const char *p;
    size_t n;
} pc_str;

/* pc_result is a hook's return value: ptr << 32 | len of the result
 * document, or 0 (PC_CONTINUE: continue with no changes). */
typedef uint64_t pc_result;
#define PC_CONTINUE ((pc_result)0)

static inline pc_str pc_cstr(const char *s) {
    pc_str r = {s, strlen(s)};
    return r;
}

/* ---- Exports: ABI marker and allocator --------------------------------- */

#ifndef PC_NO_EXPORTS
PC_EXPORT("gw_abi_v1") void gw_abi_v1(void) {}
PC_EXPORT("gw_alloc") void *gw_alloc(uint32_t size) { return malloc(size ? size : 1); }
PC_EXPORT("gw_free") void gw_free(void *p) { free(p); }
#endif

/* Hook definitions: PC_ON_REQUEST(env) { ... return PC_CONTINUE; } */
#define PC_HOOK_(exp, env)                                                 \
    static pc_result exp##_impl(pc_str env);                               \
    PC_EXPORT(#exp) uint64_t exp(uint32_t p_, uint32_t n_) {               \
        pc_str e_ = {(const char *)(uintptr_t)p_, n_};                     \
        pc_result r_ = exp##_impl(e_);                                     \
        free((void *)(uintptr_t)p_);                                       \
        return r_;                                                         \
    }                                                                      \
    static pc_result exp##_impl(pc_str env)

/* on_config gets the plugin's config value itself ("null" when none).
 * Return PC_CONTINUE, or pc_error("...") to refuse the config (the
 * gateway then refuses to load the plugin). */
#define PC_ON_CONFIG(cfg) PC_HOOK_(gw_on_config, cfg)
#define PC_ON_REQUEST(env) PC_HOOK_(gw_on_request, env)
#define PC_ON_RESPONSE(env) PC_HOOK_(gw_on_response, env)
#define PC_ON_STREAM_EVENT(env) PC_HOOK_(gw_on_stream_event, env)
#define PC_ON_STREAM_END(env) PC_HOOK_(gw_on_stream_end, env)

/* ---- Host functions (imported only when used) -------------------------- */

enum { PC_DEBUG = 0, PC_INFO = 1, PC_WARN = 2, PC_ERROR = 3 };

PC_IMPORT("gw", "log") void pc_host_log_(int32_t level, const char *p, uint32_t n);
PC_IMPORT("gw", "get_config") uint32_t pc_host_get_config_(char *buf, uint32_t limit);

/* pc_log writes a line to the gateway log (cut at 4 KiB). */
static inline PC_UNUSED void pc_log(int level, const char *msg) { pc_host_log_(level, msg, (uint32_t)strlen(msg)); }
static inline PC_UNUSED void pc_logn(int level, const char *msg, size_t n) { pc_host_log_(level, msg, (uint32_t)n); }

/* pc_get_config returns the plugin's config JSON in a malloc'd buffer
 * (free it), or a span of "null". */
static PC_UNUSED pc_str pc_get_config(void) {
    uint32_t n = pc_host_get_config_(0, 0);
    char *b = (char *)malloc(n ? n : 1);
    pc_str r = {b, 0};
    if (b && pc_host_get_config_(b, n) == n) r.n = n;
    return r;
}

/* ---- Output buffer ------------------------------------------------------ */

/* pc_buf is a growable byte buffer. A failed allocation traps (the host
 * counts a plugin failure), so callers need no error checks. */
typedef struct {
    char *p;
    size_t n, cap;
} pc_buf;

static PC_UNUSED void pc_buf_reserve(pc_buf *b, size_t more) {
    if (b->n + more <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->n + more) cap *= 2;
    char *p = (char *)realloc(b->p, cap);
    if (!p) __builtin_trap();
    b->p = p;
    b->cap = cap;
}

static PC_UNUSED void pc_buf_raw(pc_buf *b, const char *s, size_t n) {
    pc_buf_reserve(b, n);
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
}
static PC_UNUSED void pc_buf_byte(pc_buf *b, char c) {
    pc_buf_reserve(b, 1);
    b->p[b->n++] = c;
}
static PC_UNUSED void pc_buf_cstr(pc_buf *b, const char *s) { pc_buf_raw(b, s, strlen(s)); }
static PC_UNUSED void pc_buf_str(pc_buf *b, pc_str s) { pc_buf_raw(b, s.p, s.n); }
static PC_UNUSED void pc_buf_free(pc_buf *b) {
    free(b->p);
    b->p = 0;
    b->n = b->cap = 0;
}

static PC_UNUSED void pc_buf_uint(pc_buf *b, uint64_t v) {
    char t[20];
    int i = 20;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    pc_buf_raw(b, t + i, (size_t)(20 - i));
}
static PC_UNUSED void pc_buf_int(pc_buf *b, int64_t v) {
    if (v < 0) {
        pc_buf_byte(b, '-');
        pc_buf_uint(b, (uint64_t)(-(v + 1)) + 1);
    } else {
        pc_buf_uint(b, (uint64_t)v);
    }
}

static inline uint64_t pc_load8_(const char *p);
static inline uint64_t pc_needs_escape_(uint64_t w);

/* pc_buf_json_str appends s (raw UTF-8 text) as a quoted, escaped JSON
 * string. */
static PC_UNUSED void pc_buf_json_str(pc_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    pc_buf_reserve(b, n + 2);
    b->p[b->n++] = '"';
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        /* 8 bytes per step through text that needs no escaping */
        while (n - i >= 8 && !pc_needs_escape_(pc_load8_(s + i))) i += 8;
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        pc_buf_raw(b, s + start, i - start);
        switch (c) {
        case '"': pc_buf_raw(b, "\\\"", 2); break;
        case '\\': pc_buf_raw(b, "\\\\", 2); break;
        case '\n': pc_buf_raw(b, "\\n", 2); break;
        case '\r': pc_buf_raw(b, "\\r", 2); break;
        case '\t': pc_buf_raw(b, "\\t", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            pc_buf_raw(b, u, 6);
        }
        }
        start = i + 1;
    }
    pc_buf_raw(b, s + start, n - start);
    pc_buf_byte(b, '"');
}

/* pc_buf_result hands the buffer to the host as the result document. The
 * host frees it with gw_free; b is left empty. */
static PC_UNUSED pc_result pc_buf_result(pc_buf *b) {
    if (b->n == 0) {
        pc_buf_free(b);
        return PC_CONTINUE;
    }
    pc_result r = ((uint64_t)(uintptr_t)b->p << 32) | (uint64_t)(uint32_t)b->n;
    b->p = 0;
    b->n = b->cap = 0;
    return r;
}

/* pc_result_json returns a copy of a complete result document. */
static PC_UNUSED pc_result pc_result_json(const char *json) {
    pc_buf b = {0, 0, 0};
    pc_buf_cstr(&b, json);
    return pc_buf_result(&b);
}

/* ---- JSON scanning ------------------------------------------------------- */

static inline const char *pc_json_ws(const char *p, const char *e) {
    /* compact JSON has no whitespace: test before entering a loop (the
     * host may check every loop entry for the hook's deadline) */
    if (p < e && (unsigned char)*p > ' ') return p;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Word-at-a-time helpers: test 8 bytes per step. Loops are what a guest
 * pays most for in the host (every loop iteration may be checked for the
 * hook's deadline), so scanning 8 bytes per iteration matters. */
#define PC_ONES_ 0x0101010101010101ULL
#define PC_HIGHS_ 0x8080808080808080ULL

static inline uint64_t pc_load8_(const char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}
/* pc_hasbyte_ is non-zero when a byte of w is c. */
static inline uint64_t pc_hasbyte_(uint64_t w, unsigned char c) {
    uint64_t v = w ^ (PC_ONES_ * c);
    return (v - PC_ONES_) & ~v & PC_HIGHS_;
}
/* pc_needs_escape_ is non-zero when a byte of w is a control character,
 * '"' or a backslash. */
static inline uint64_t pc_needs_escape_(uint64_t w) {
    uint64_t lt = (w - PC_ONES_ * 0x20) & ~w & PC_HIGHS_; /* a byte < 0x20 */
    return lt | pc_hasbyte_(w, '"') | pc_hasbyte_(w, '\\');
}

/* pc_hasbetween_ is non-zero when a byte of w is > m and < n (ASCII). */
static inline uint64_t pc_hasbetween_(uint64_t w, unsigned m, unsigned n) {
    uint64_t b = w & (PC_ONES_ * 127);
    return ((PC_ONES_ * (127 + n) - b) & ~w & (b + PC_ONES_ * (127 - m))) & PC_HIGHS_;
}

/* pc_str_end_ returns the closing quote of a string whose text starts at
 * p, or NULL. */
static inline const char *pc_str_end_(const char *p, const char *e) {
    for (;;) {
        /* 32 bytes per iteration while nothing is found: long strings are
         * what envelopes are made of */
        while (e - p >= 32) {
            uint64_t w0 = pc_load8_(p), w1 = pc_load8_(p + 8), w2 = pc_load8_(p + 16), w3 = pc_load8_(p + 24);
            if ((pc_hasbyte_(w0, '"') | pc_hasbyte_(w0, '\\') | pc_hasbyte_(w1, '"') | pc_hasbyte_(w1, '\\') |
                 pc_hasbyte_(w2, '"') | pc_hasbyte_(w2, '\\') | pc_hasbyte_(w3, '"') | pc_hasbyte_(w3, '\\')) != 0)
                break;
            p += 32;
        }
        while (e - p >= 8) {
            uint64_t w = pc_load8_(p);
            uint64_t m = pc_hasbyte_(w, '"') | pc_hasbyte_(w, '\\');
            if (m) {
                /* the lowest flagged byte is a true match (little endian) */
                p += __builtin_ctzll(m) >> 3;
                goto found;
            }
            p += 8;
        }
        while (p < e && *p != '"' && *p != '\\') p++;
        if (p >= e) return 0;
    found:
        if (*p == '"') return p;
        p += 2; /* an escape */
        if (p > e) return 0;
    }
}

/* pc_json_skip returns the end of the JSON value starting at p (after
 * leading whitespace), or NULL when it is cut short. It finds the end of
 * well-formed JSON quickly (8 bytes per step between strings and
 * brackets); it does not validate (the host's envelopes are valid). */
static PC_UNUSED const char *pc_json_skip(const char *p, const char *e) {
    p = pc_json_ws(p, e);
    if (p >= e) return 0;
    char c = *p;
    if (c == '"') {
        p = pc_str_end_(p + 1, e);
        return p ? p + 1 : 0;
    }
    if (c != '{' && c != '[') {
        /* number or literal */
        while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' &&
               *p != ':')
            p++;
        return p;
    }
    int depth = 0;
    for (;;) {
        while (e - p >= 8) {
            uint64_t w = pc_load8_(p);
            uint64_t m = pc_hasbyte_(w, '"') | pc_hasbyte_(w, '{') | pc_hasbyte_(w, '}') | pc_hasbyte_(w, '[') |
                         pc_hasbyte_(w, ']');
            if (m) {
                p += __builtin_ctzll(m) >> 3;
                goto found;
            }
            p += 8;
        }
        while (p < e && *p != '"' && *p != '{' && *p != '}' && *p != '[' && *p != ']') p++;
        if (p >= e) return 0;
    found:
        switch (*p) {
        case '"':
            p = pc_str_end_(p + 1, e);
            if (!p) return 0;
            p++;
            break;
        case '{':
        case '[':
            depth++;
            p++;
            break;
        default:
            p++;
            if (--depth == 0) return p;
        }
    }
}

/* pc_json_type returns the kind of a value: '"' string, '{' object,
 * '[' array, 'n' null, 't' true, 'f' false, '0' number, 0 nothing. */
static inline char pc_json_type(pc_str v) {
    if (v.n == 0) return 0;
    char c = v.p[0];
    if (c == '-' || (c >= '0' && c <= '9')) return '0';
    return c;
}

/* Iteration over an array's values or an object's members. */
typedef struct {
    const char *p, *e;
    char close;
} pc_iter;

/* pc_json_iter starts iterating v (an array or object); 0 when v is
 * neither. */
static PC_UNUSED int pc_json_iter(pc_str v, pc_iter *it) {
    const char *p = pc_json_ws(v.p, v.p + v.n);
    if (p >= v.p + v.n || (*p != '[' && *p != '{')) return 0;
    it->close = *p == '[' ? ']' : '}';
    it->p = p + 1;
    it->e = v.p + v.n;
    return 1;
}

/* pc_json_next yields the next value (arrays) or member (objects: key is
 * the key's string value with its quotes; pass NULL for arrays). Returns
 * 0 at the end or on malformed input. */
static PC_UNUSED int pc_json_next(pc_iter *it, pc_str *key, pc_str *val) {
    const char *p = pc_json_ws(it->p, it->e);
    if (p < it->e && *p == ',') p = pc_json_ws(p + 1, it->e);
    if (p >= it->e || *p == it->close) {
        it->p = it->e;
        return 0;
    }
    if (it->close == '}') {
        const char *k = p;
        const char *ke = pc_json_skip(p, it->e);
        if (!ke || *k != '"') return 0;
        if (key) {
            key->p = k;
            key->n = (size_t)(ke - k);
        }
        p = pc_json_ws(ke, it->e);
        if (p >= it->e || *p != ':') return 0;
        p = pc_json_ws(p + 1, it->e);
    }
    const char *ve = pc_json_skip(p, it->e);
    if (!ve) return 0;
    val->p = p;
    val->n = (size_t)(ve - p);
    it->p = ve;
    return 1;
}

/* pc_json_str_eq reports whether v is the JSON string s (compared
 * without unescaping: fine for keys and plain values). */
static PC_UNUSED int pc_json_str_eq(pc_str v, const char *s) {
    size_t n = strlen(s);
    return v.n == n + 2 && v.p[0] == '"' && memcmp(v.p + 1, s, n) == 0;
}

/* pc_json_get finds member key of object obj. */
static PC_UNUSED int pc_json_get(pc_str obj, const char *key, pc_str *out) {
    pc_iter it;
    pc_str k, v;
    if (!pc_json_iter(obj, &it) || it.close != '}') return 0;
    while (pc_json_next(&it, &k, &v)) {
        if (pc_json_str_eq(k, key)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* pc_json_fields looks up several members of obj in one pass (one scan
 * instead of one per key): out[i] is keys[i]'s value, or {NULL, 0} when
 * absent. Returns the number found. */
static PC_UNUSED int pc_json_fields(pc_str obj, const char *const *keys, pc_str *out, int n) {
    pc_iter it;
    pc_str k, v;
    int found = 0;
    for (int i = 0; i < n; i++) out[i].p = 0, out[i].n = 0;
    if (!pc_json_iter(obj, &it) || it.close != '}') return 0;
    while (found < n && pc_json_next(&it, &k, &v)) {
        for (int i = 0; i < n; i++) {
            if (!out[i].p && pc_json_str_eq(k, keys[i])) {
                out[i] = v;
                found++;
                break;
            }
        }
    }
    return found;
}

/* pc_envelope reads an input envelope in one pass over its head: out[i]
 * is keys[i]'s value ({NULL, 0} when absent; n may be 0) and *payload the
 * "body" or "data" member ({NULL, 0} when none). The payload is not
 * scanned: the host writes it as the envelope's last member (ABI §3), so
 * it runs to the envelope's closing brace. Returns 0 when env is not an
 * object. */
static PC_UNUSED int pc_envelope(pc_str env, const char *const *keys, pc_str *out, int n, pc_str *payload) {
    pc_iter it;
    pc_str k, v;
    for (int i = 0; i < n; i++) out[i].p = 0, out[i].n = 0;
    payload->p = 0, payload->n = 0;
    if (!pc_json_iter(env, &it) || it.close != '}') return 0;
    const char *end = env.p + env.n;
    while (end > env.p && end[-1] != '}') end--;
    if (end > env.p) end--; /* the closing brace */
    for (;;) {
        const char *p = pc_json_ws(it.p, it.e);
        if (p < it.e && *p == ',') p = pc_json_ws(p + 1, it.e);
        if (p >= it.e || *p != '"') return 1;
        const char *ke = pc_json_skip(p, it.e);
        if (!ke) return 1;
        k.p = p, k.n = (size_t)(ke - p);
        p = pc_json_ws(ke, it.e);
        if (p >= it.e || *p != ':') return 1;
        p = pc_json_ws(p + 1, it.e);
        if (pc_json_str_eq(k, "body") || pc_json_str_eq(k, "data")) {
            const char *e = end;
            while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) e--;
            payload->p = p, payload->n = (size_t)(e - p);
            return 1;
        }
        const char *ve = pc_json_skip(p, it.e);
        if (!ve) return 1;
        v.p = p, v.n = (size_t)(ve - p);
        for (int i = 0; i < n; i++) {
            if (!out[i].p && pc_json_str_eq(k, keys[i])) {
                out[i] = v;
                break;
            }
        }
        it.p = ve;
    }
}

/* pc_json_index finds element i of array arr. */
static PC_UNUSED int pc_json_index(pc_str arr, size_t i, pc_str *out) {
    pc_iter it;
    pc_str v;
    if (!pc_json_iter(arr, &it) || it.close != ']') return 0;
    for (size_t j = 0; pc_json_next(&it, 0, &v); j++) {
        if (j == i) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* pc_json_path follows a dotted path of member names and array indices:
 * "body.messages.0.content". */
static PC_UNUSED int pc_json_path(pc_str doc, const char *path, pc_str *out) {
    pc_str cur = doc;
    char seg[128];
    while (*path) {
        size_t n = 0;
        while (path[n] && path[n] != '.') n++;
        if (n >= sizeof seg) return 0;
        memcpy(seg, path, n);
        seg[n] = 0;
        path += n;
        if (*path == '.') path++;
        const char *p = pc_json_ws(cur.p, cur.p + cur.n);
        if (p < cur.p + cur.n && *p == '[') {
            size_t i = 0;
            for (size_t j = 0; j < n; j++) {
                if (seg[j] < '0' || seg[j] > '9') return 0;
                i = i * 10 + (size_t)(seg[j] - '0');
            }
            if (!pc_json_index(cur, i, &cur)) return 0;
        } else if (!pc_json_get(cur, seg, &cur)) {
            return 0;
        }
    }
    *out = cur;
    return 1;
}

/* pc_json_int reads an integer value (0 when v is not a number). */
static PC_UNUSED int64_t pc_json_int(pc_str v) {
    int64_t x = 0;
    size_t i = 0;
    int neg = 0;
    if (v.n && v.p[0] == '-') {
        neg = 1;
        i = 1;
    }
    for (; i < v.n && v.p[i] >= '0' && v.p[i] <= '9'; i++) x = x * 10 + (v.p[i] - '0');
    return neg ? -x : x;
}

static inline int pc_hexval_(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static inline size_t pc_utf8_(char *d, uint32_t cp) {
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* pc_json_unescape decodes the JSON string value s (with its quotes) into
 * dst, which must hold s.n - 2 bytes (the decoded text is never longer),
 * and returns the decoded length. Invalid escapes decode to U+FFFD. */
static PC_UNUSED size_t pc_json_unescape(pc_str s, char *dst) {
    if (s.n < 2 || s.p[0] != '"') return 0;
    const char *p = s.p + 1, *e = s.p + s.n - 1;
    size_t n = 0;
    while (p < e) {
        /* copy up to the next backslash, 32 or 8 bytes per step */
        const char *q = p;
        while (e - q >= 32 && !(pc_hasbyte_(pc_load8_(q), '\\') | pc_hasbyte_(pc_load8_(q + 8), '\\') |
                                pc_hasbyte_(pc_load8_(q + 16), '\\') | pc_hasbyte_(pc_load8_(q + 24), '\\')))
            q += 32;
        while (e - q >= 8 && !pc_hasbyte_(pc_load8_(q), '\\')) q += 8;
        while (q < e && *q != '\\') q++;
        memcpy(dst + n, p, (size_t)(q - p));
        n += (size_t)(q - p);
        p = q;
        if (p >= e) break;
        if (++p >= e) break;
        char c = *p++;
        switch (c) {
        case 'n': dst[n++] = '\n'; break;
        case 't': dst[n++] = '\t'; break;
        case 'r': dst[n++] = '\r'; break;
        case 'b': dst[n++] = '\b'; break;
        case 'f': dst[n++] = '\f'; break;
        case 'u': {
            uint32_t cp = 0;
            int ok = e - p >= 4;
            for (int i = 0; ok && i < 4; i++) {
                int h = pc_hexval_(p[i]);
                if (h < 0) ok = 0;
                cp = cp << 4 | (uint32_t)h;
            }
            if (!ok) {
                n += pc_utf8_(dst + n, 0xFFFD);
                break;
            }
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && e - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t lo = 0;
                int ok2 = 1;
                for (int i = 0; i < 4; i++) {
                    int h = pc_hexval_(p[2 + i]);
                    if (h < 0) ok2 = 0;
                    lo = lo << 4 | (uint32_t)h;
                }
                if (ok2 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
            n += pc_utf8_(dst + n, cp);
            break;
        }
        default: dst[n++] = c; /* " \ / */
        }
    }
    return n;
}

/* pc_json_string returns the decoded text of string value v in a malloc'd
 * buffer (free it); {NULL,0} when v is not a string. */
static PC_UNUSED pc_str pc_json_string(pc_str v) {
    pc_str r = {0, 0};
    if (pc_json_type(v) != '"') return r;
    char *d = (char *)malloc(v.n ? v.n : 1);
    if (!d) __builtin_trap();
    r.p = d;
    r.n = pc_json_unescape(v, d);
    return r;
}

/* pc_json_text returns the text of string value v without copying when
 * it has no escapes (*owned = 0: a span into the JSON), else decoded into
 * a malloc'd buffer (*owned = 1: free it). {NULL,0} when v is not a
 * string. */
static PC_UNUSED pc_str pc_json_text(pc_str v, int *owned) {
    pc_str r = {0, 0};
    *owned = 0;
    if (pc_json_type(v) != '"' || v.n < 2) return r;
    if (!memchr(v.p + 1, '\\', v.n - 2)) {
        r.p = v.p + 1;
        r.n = v.n - 2;
        return r;
    }
    *owned = 1;
    return pc_json_string(v);
}

/* ---- Results --------------------------------------------------------------- */

/* pc_res builds a result document field by field. Each list accumulates
 * its elements; pc_res_finish assembles the document (PC_CONTINUE when
 * nothing was set) and frees the builder. */
typedef struct {
    const char *action; /* NULL: continue */
    pc_buf extra;       /* ,"key":value pairs (route, reject, ...) */
    pc_buf patch, redactions, labels, insert;
    pc_buf state;
    int has_state;
    int drop;
} pc_res;

static inline void pc_res_init(pc_res *r) { memset(r, 0, sizeof *r); }

static inline void pc_list_sep_(pc_buf *b) {
    if (b->n) pc_buf_byte(b, ',');
}

/* pc_res_patch adds an RFC 6902 operation; value is raw JSON (NULL for
 * remove). path is a JSON pointer into the envelope's body or data. */
static PC_UNUSED void pc_res_patch(pc_res *r, const char *op, const char *path, size_t pathn, const char *value, size_t n) {
    pc_list_sep_(&r->patch);
    pc_buf_cstr(&r->patch, "{\"op\":\"");
    pc_buf_cstr(&r->patch, op);
    pc_buf_cstr(&r->patch, "\",\"path\":");
    pc_buf_json_str(&r->patch, path, pathn);
    if (value) {
        pc_buf_cstr(&r->patch, ",\"value\":");
        pc_buf_raw(&r->patch, value, n);
    }
    pc_buf_byte(&r->patch, '}');
}

/* pc_res_patch_str adds an operation whose value is the text s. */
static PC_UNUSED void pc_res_patch_str(pc_res *r, const char *op, const char *path, size_t pathn, const char *s, size_t n) {
    pc_list_sep_(&r->patch);
    pc_buf_cstr(&r->patch, "{\"op\":\"");
    pc_buf_cstr(&r->patch, op);
    pc_buf_cstr(&r->patch, "\",\"path\":");
    pc_buf_json_str(&r->patch, path, pathn);
    pc_buf_cstr(&r->patch, ",\"value\":");
    pc_buf_json_str(&r->patch, s, n);
    pc_buf_byte(&r->patch, '}');
}

static PC_UNUSED void pc_res_redaction(pc_res *r, const char *path, size_t pathn, const char *kind, int count) {
    pc_list_sep_(&r->redactions);
    pc_buf_cstr(&r->redactions, "{\"path\":");
    pc_buf_json_str(&r->redactions, path, pathn);
    pc_buf_cstr(&r->redactions, ",\"kind\":");
    pc_buf_json_str(&r->redactions, kind, strlen(kind));
    pc_buf_cstr(&r->redactions, ",\"count\":");
    pc_buf_int(&r->redactions, count);
    pc_buf_byte(&r->redactions, '}');
}

/* pc_res_label adds a label once. */
static PC_UNUSED void pc_res_label(pc_res *r, const char *label) {
    pc_buf q = {0, 0, 0};
    pc_buf_json_str(&q, label, strlen(label));
    for (size_t i = 0; i + q.n <= r->labels.n; i++) {
        if (memcmp(r->labels.p + i, q.p, q.n) == 0 && (i == 0 || r->labels.p[i - 1] == ',')) {
            pc_buf_free(&q);
            return;
        }
    }
    pc_list_sep_(&r->labels);
    pc_buf_raw(&r->labels, q.p, q.n);
    pc_buf_free(&q);
}

/* pc_res_insert emits an SSE event before the current one; event may be
 * NULL (a data-only event); data is raw JSON. */
static PC_UNUSED void pc_res_insert(pc_res *r, const char *event, const char *data, size_t n) {
    pc_list_sep_(&r->insert);
    pc_buf_byte(&r->insert, '{');
    if (event) {
        pc_buf_cstr(&r->insert, "\"event\":");
        pc_buf_json_str(&r->insert, event, strlen(event));
        pc_buf_byte(&r->insert, ',');
    }
    pc_buf_cstr(&r->insert, "\"data\":");
    pc_buf_raw(&r->insert, data, n);
    pc_buf_byte(&r->insert, '}');
}

/* pc_res_state sets the stream state handed back with the next event
 * (text; at most 4 KiB once JSON-escaped). */
static PC_UNUSED void pc_res_state(pc_res *r, const char *s, size_t n) {
    r->state.n = 0;
    pc_buf_json_str(&r->state, s, n);
    r->has_state = 1;
}

static inline void pc_res_drop(pc_res *r) { r->drop = 1; }

static PC_UNUSED void pc_res_list_(pc_buf *out, const char *key, pc_buf *l, char open, char close) {
    if (!l->n) return;
    pc_buf_cstr(out, ",\"");
    pc_buf_cstr(out, key);
    pc_buf_cstr(out, "\":");
    pc_buf_byte(out, open);
    pc_buf_raw(out, l->p, l->n);
    pc_buf_byte(out, close);
}

static PC_UNUSED void pc_res_free(pc_res *r) {
    pc_buf_free(&r->extra);
    pc_buf_free(&r->patch);
    pc_buf_free(&r->redactions);
    pc_buf_free(&r->labels);
    pc_buf_free(&r->insert);
    pc_buf_free(&r->state);
}

static PC_UNUSED pc_result pc_res_finish(pc_res *r) {
    if (!r->action && !r->extra.n && !r->patch.n && !r->redactions.n && !r->labels.n && !r->insert.n &&
        !r->has_state && !r->drop) {
        pc_res_free(r);
        return PC_CONTINUE;
    }
    pc_buf out = {0, 0, 0};
    pc_buf_cstr(&out, "{\"action\":\"");
    pc_buf_cstr(&out, r->action ? r->action : "continue");
    pc_buf_byte(&out, '"');
    pc_buf_raw(&out, r->extra.p, r->extra.n);
    pc_res_list_(&out, "patch", &r->patch, '[', ']');
    pc_res_list_(&out, "redactions", &r->redactions, '[', ']');
    pc_res_list_(&out, "labels", &r->labels, '[', ']');
    pc_res_list_(&out, "insert", &r->insert, '[', ']');
    if (r->has_state) {
        pc_buf_cstr(&out, ",\"state\":");
        pc_buf_raw(&out, r->state.p, r->state.n);
    }
    if (r->drop) pc_buf_cstr(&out, ",\"drop\":true");
    pc_buf_byte(&out, '}');
    pc_res_free(r);
    return pc_buf_result(&out);
}

/* Whole results in one call. */

static PC_UNUSED pc_result pc_reject(int status, const char *code, const char *message) {
    pc_buf b = {0, 0, 0};
    pc_buf_cstr(&b, "{\"action\":\"reject\",\"reject\":{\"status\":");
    pc_buf_int(&b, status);
    pc_buf_cstr(&b, ",\"code\":");
    pc_buf_json_str(&b, code, strlen(code));
    pc_buf_cstr(&b, ",\"message\":");
    pc_buf_json_str(&b, message, strlen(message));
    pc_buf_cstr(&b, "}}");
    return pc_buf_result(&b);
}

static PC_UNUSED pc_result pc_error(const char *message) {
    pc_buf b = {0, 0, 0};
    pc_buf_cstr(&b, "{\"action\":\"error\",\"error\":");
    pc_buf_json_str(&b, message, strlen(message));
    pc_buf_byte(&b, '}');
    return pc_buf_result(&b);
}

/* pc_route routes to model; fallbacks is raw JSON (an array) or NULL. */
static PC_UNUSED pc_result pc_route(const char *model, const char *fallbacks) {
    pc_buf b = {0, 0, 0};
    pc_buf_cstr(&b, "{\"action\":\"route\",\"route\":{\"model\":");
    pc_buf_json_str(&b, model, strlen(model));
    if (fallbacks) {
        pc_buf_cstr(&b, ",\"fallbacks\":");
        pc_buf_cstr(&b, fallbacks);
    }
    pc_buf_cstr(&b, "}}");
    return pc_buf_result(&b);
}

#endif /* PORTCULLIS_H */
