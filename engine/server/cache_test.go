package server

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/cache"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/store"
)

func withCache(t testing.TB, s config.CacheSettings) func(*gateway.Options) {
	t.Helper()
	s.Enabled = true
	if s.TTL == 0 {
		s.TTL = time.Minute
	}
	if s.MaxBytes == 0 {
		s.MaxBytes = 8 << 20
	}
	if s.Scope == "" {
		s.Scope = "team"
	}
	c, err := cache.New(s, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return func(o *gateway.Options) { o.Cache = c.Middleware() }
}

// upstreamCalls counts the chat requests the fake upstream received.
func (h *harness) upstreamCalls(path string) int {
	n := 0
	for _, r := range h.up.Requests() {
		if strings.HasSuffix(r.Path, path) {
			n++
		}
	}
	return n
}

func streamText(t *testing.T, b []byte) (string, [][2]string) {
	t.Helper()
	evs := events(b)
	var sb strings.Builder
	for _, e := range evs {
		sb.WriteString(gjson.Get(e[1], "choices.0.delta.content").String())
	}
	return sb.String(), evs
}

func TestCacheHitThroughServer(t *testing.T) {
	h := newHarnessOpts(t, testConfig, config.ServerSettings{}, withCache(t, config.CacheSettings{}))
	body := chat("gpt-4o", `,"temperature":0,"cache":{"ttl":60}`)
	resp, first := h.post("/v1/chat/completions", body)
	if resp.StatusCode != 200 || resp.Header.Get("x-cache") != "MISS" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, first)
	}
	// The cache object is the gateway's: OpenAI would reject it.
	if ups := h.up.Requests(); len(ups) != 1 || gjson.GetBytes(ups[0].Body, "cache").Exists() {
		t.Fatalf("upstream saw %d requests, body %s", len(ups), ups[0].Body)
	}
	resp, second := h.post("/v1/chat/completions", body)
	if resp.StatusCode != 200 || resp.Header.Get("x-cache") != "HIT" || resp.Header.Get("x-litellm-cache-key") == "" {
		t.Fatalf("second: %d %v", resp.StatusCode, resp.Header)
	}
	if string(first) != string(second) || h.upstreamCalls("/chat/completions") != 1 {
		t.Fatalf("hit differs or upstream called again (%d): %s vs %s", h.upstreamCalls("/chat/completions"), first, second)
	}

	// The same answer replayed as a stream, with its usage only when asked.
	want := jsonPath(t, first, "choices", 0, "message", "content").(string)
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", `,"temperature":0,"stream":true`))
	text, evs := streamText(t, b)
	if resp.Header.Get("x-cache") != "HIT" || text != want || evs[len(evs)-1][1] != "[DONE]" {
		t.Fatalf("replay: %v %q want %q: %s", resp.Header, text, want, b)
	}
	for _, e := range evs {
		if gjson.Get(e[1], "usage").IsObject() && len(gjson.Get(e[1], "choices").Array()) == 0 {
			t.Fatalf("usage chunk sent to a client that did not ask: %s", e[1])
		}
	}
	_, b = h.post("/v1/chat/completions", chat("gpt-4o", `,"temperature":0,"stream":true,"stream_options":{"include_usage":true}`))
	_, evs = streamText(t, b)
	u := gjson.Get(evs[len(evs)-2][1], "usage")
	if u.Get("prompt_tokens").Int() != int64(jsonPath(t, first, "usage", "prompt_tokens").(float64)) || u.Get("completion_tokens").Int() == 0 {
		t.Fatalf("replayed usage %s vs %s", u.Raw, first)
	}
	if h.upstreamCalls("/chat/completions") != 1 {
		t.Fatalf("upstream called %d times", h.upstreamCalls("/chat/completions"))
	}
	// A non-deterministic request is not cached by default.
	resp, _ = h.post("/v1/chat/completions", chat("gpt-4o", `,"temperature":0.7`))
	if resp.Header.Get("x-cache") != "" || h.upstreamCalls("/chat/completions") != 2 {
		t.Fatalf("temperature 0.7: x-cache %q, upstream %d", resp.Header.Get("x-cache"), h.upstreamCalls("/chat/completions"))
	}
}

func TestCacheCrossDialectStreamThenHit(t *testing.T) {
	h := newHarnessOpts(t, testConfig, config.ServerSettings{}, withCache(t, config.CacheSettings{}))
	// Claude behind the OpenAI endpoint: the streamed answer is translated,
	// assembled and stored; the next request, not streamed, is a hit.
	resp, b := h.post("/v1/chat/completions", chat("claude", `,"temperature":0,"stream":true`))
	text, _ := streamText(t, b)
	if resp.StatusCode != 200 || resp.Header.Get("x-cache") != "MISS" || text == "" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
	resp, b = h.post("/v1/chat/completions", chat("claude", `,"temperature":0`))
	if resp.Header.Get("x-cache") != "HIT" || jsonPath(t, b, "choices", 0, "message", "content") != text {
		t.Fatalf("hit: %v %s, streamed text %q", resp.Header, b, text)
	}
	if n := h.upstreamCalls("/messages"); n != 1 {
		t.Fatalf("upstream called %d times", n)
	}
	// A cut stream is never stored.
	for range 2 {
		h.post("/v1/chat/completions", chat("openai-cut", `,"temperature":0,"stream":true`))
	}
	if n := h.upstreamCalls("/chat/completions"); n != 2 {
		t.Fatalf("cut stream served from cache: upstream called %d times", n)
	}
}

func TestCacheConcurrentMissesGoUpstreamOnce(t *testing.T) {
	h := newHarnessOpts(t, testConfig, config.ServerSettings{}, withCache(t, config.CacheSettings{}))
	body := chat("slow", `,"temperature":0,"stream":true`)
	var wg sync.WaitGroup
	texts := make([]string, 30)
	for i := range texts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, b := h.post("/v1/chat/completions", body)
			texts[i], _ = streamText(t, b)
		}()
	}
	wg.Wait()
	if n := h.upstreamCalls("/chat/completions"); n != 1 {
		t.Fatalf("30 identical requests reached the upstream %d times", n)
	}
	for _, s := range texts {
		if s != texts[0] || s == "" {
			t.Fatalf("answers differ: %q vs %q", s, texts[0])
		}
	}
}

func TestCacheHitCostsNothingAndRecordsSaving(t *testing.T) {
	s := newStackOpts(t, keysConfig, withCache(t, config.CacheSettings{}))
	body := `{"model":"m","temperature":0,"messages":[{"role":"user","content":"price me"}]}`
	for range 2 {
		if resp, b := s.post("/v1/chat/completions", body, "Authorization", "Bearer "+master); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	if err := s.writer.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, err := s.st.ListSpend(context.Background(), store.SpendFilter{})
	if err != nil || len(recs) != 2 {
		t.Fatalf("%v %v", recs, err)
	}
	var hit, miss store.SpendRecord
	for _, r := range recs {
		if r.CacheHit {
			hit = r
		} else {
			miss = r
		}
	}
	if miss.Cost == 0 || hit.Cost != 0 || hit.SavedCost != miss.Cost || !hit.CacheHit {
		t.Fatalf("miss %+v\nhit %+v", miss, hit)
	}
}

// Without a cache stage LiteLLM's cache object is still the gateway's:
// it never reaches the provider.
func TestCacheObjectNeverForwarded(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", `,"cache":{"no-cache":true}`))
	ups := h.up.Requests()
	if resp.StatusCode != 200 || len(ups) != 1 || gjson.GetBytes(ups[0].Body, "cache").Exists() {
		t.Fatalf("%d %s; upstream %s", resp.StatusCode, b, ups[0].Body)
	}
}
