package cache

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
)

func callAdmin(t *testing.T, c *Cache, method, path, body string) (int, map[string]any) {
	t.Helper()
	h, ok := c.AdminHandlers()[path]
	if !ok {
		t.Fatalf("no handler for %s", path)
	}
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	ctx.Request.SetBodyString(body)
	h(&ctx)
	var out map[string]any
	if err := json.Unmarshal(ctx.Response.Body(), &out); err != nil {
		t.Fatalf("%s %s: not JSON: %s", method, path, ctx.Response.Body())
	}
	return ctx.Response.StatusCode(), out
}

// The key a hit reports in x-litellm-cache-key deletes its entry through
// POST /cache/delete: the next identical request goes upstream again.
func TestAdminDeleteByReportedKey(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	hit := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	key := hit.headers[HeaderCacheKey]
	if !hit.hit || key == "" {
		t.Fatalf("no hit with a key: %+v", hit)
	}
	for _, body := range []string{`{"keys": []}`, `{"nope": 1}`, `not json`} {
		if st, out := callAdmin(t, c, "POST", "/cache/delete", body); st != 400 {
			t.Fatalf("%s: status %d %v", body, st, out)
		}
	}
	if st, _ := callAdmin(t, c, "GET", "/cache/delete", `{"keys":["x"]}`); st != 405 {
		t.Fatalf("GET /cache/delete: %d", st)
	}
	st, out := callAdmin(t, c, "POST", "/cache/delete", `{"keys": ["`+key+`"]}`)
	if st != 200 || out["status"] != "success" {
		t.Fatalf("delete: %d %v", st, out)
	}
	again := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if again.hit || up.calls.Load() != 2 {
		t.Fatalf("after delete: hit=%v upstream calls=%d", again.hit, up.calls.Load())
	}
	// A bare array of keys is accepted too.
	hit = serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if st, _ := callAdmin(t, c, "POST", "/cache/delete", `["`+hit.headers[HeaderCacheKey]+`"]`); st != 200 {
		t.Fatalf("delete with a bare array: %d", st)
	}
	if serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next).hit {
		t.Fatal("the entry survived its delete")
	}
}

func TestAdminFlushAndPing(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if !serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next).hit {
		t.Fatal("no hit before the flush")
	}
	st, out := callAdmin(t, c, "GET", "/cache/ping", "")
	if st != 200 || out["status"] != "healthy" || out["cache_type"] != "local" {
		t.Fatalf("ping: %d %v", st, out)
	}
	if st, out := callAdmin(t, c, "POST", "/cache/flushall", ""); st != 200 || out["status"] != "success" {
		t.Fatalf("flushall: %d %v", st, out)
	}
	if serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next).hit {
		t.Fatal("a hit after flushall")
	}

	// A cache that is off answers ping with 503; a store the cache did
	// not build is not flushed from here.
	off, err := New(config.CacheSettings{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if st, _ := callAdmin(t, off, "GET", "/cache/ping", ""); st != 503 {
		t.Fatalf("ping of a disabled cache: %d", st)
	}
	ext := newTestCache(t, config.CacheSettings{}, Options{Store: c.store()})
	if st, _ := callAdmin(t, ext, "POST", "/cache/flushall", ""); st != 501 {
		t.Fatalf("flushall of an external store: %d", st)
	}
}
