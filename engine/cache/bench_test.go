package cache

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// benchReq is a typical chat request: a system prompt, a short history
// and one tool (about 1.2 KiB).
var benchReq = `{"model":"gpt-4o","temperature":0,"max_tokens":512,"messages":[` +
	`{"role":"system","content":"You are a helpful assistant for an online shop. Answer briefly, cite the order id when there is one, and never invent prices."},` +
	`{"role":"user","content":"Where is my order 12345? It was supposed to arrive yesterday."},` +
	`{"role":"assistant","content":"Let me look that up for you."},` +
	`{"role":"user","content":"Thanks. Also, can I change the delivery address to the office?"}],` +
	`"tools":[{"type":"function","function":{"name":"lookup_order","description":"Look up an order by id",` +
	`"parameters":{"type":"object","properties":{"order_id":{"type":"string","description":"The order id"},` +
	`"fields":{"type":"array","items":{"type":"string","enum":["status","address","eta","items"]}}},"required":["order_id"]}}}],` +
	`"tool_choice":"auto","user":"customer-981","stream":false}`

// answer4K is a 4 KiB chat completion.
func answer4K() []byte {
	text := strings.Repeat("The order shipped on Monday and is with the carrier. ", 4096/53)
	return []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1741569952,"model":"gpt-4o-2024-08-06",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"` + text + `","refusal":null},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":220,"completion_tokens":900,"total_tokens":1120},"system_fingerprint":"fp_bench"}`)
}

func benchCache(b testing.TB) (*Cache, pipeline.Handler) {
	c := newTestCache(b, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: answer4K()}
	x := exchange(llm.OpenAIChat, benchReq)
	if err := c.Serve(x, up.next); err != nil {
		b.Fatal(err)
	}
	return c, up.next
}

// hitOnce serves one hit on a pooled exchange, as the server would.
func hitOnce(c *Cache, next pipeline.Handler, body []byte, stream bool) bool {
	x := pipeline.Acquire()
	x.Dialect, x.Body, x.Model, x.Stream = llm.OpenAIChat, body, "gpt-4o", stream
	x.KeyHash, x.TeamID = "key-a", "team-a"
	_ = c.Serve(x, next)
	hit := x.CacheHit && x.Response != nil
	pipeline.Release(x)
	return hit
}

// BenchmarkHit is the gateway time of a cache hit for a 4 KiB answer: key
// (canonical JSON + SHA-256), lookup, decode and the response the server
// then writes. Budget: under 20 µs.
func BenchmarkHit(b *testing.B) {
	c, next := benchCache(b)
	body := []byte(benchReq)
	if !hitOnce(c, next, body, false) {
		b.Fatal("no hit")
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(answer4K())))
	for b.Loop() {
		hitOnce(c, next, body, false)
	}
}

// BenchmarkHitParallel is BenchmarkHit from every P at once.
func BenchmarkHitParallel(b *testing.B) {
	c, next := benchCache(b)
	body := []byte(benchReq)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			hitOnce(c, next, body, false)
		}
	})
}

// BenchmarkHitStreamReplay is a streamed hit including building and
// draining every replayed event.
func BenchmarkHitStreamReplay(b *testing.B) {
	c, next := benchCache(b)
	body := []byte(benchReq)
	b.ReportAllocs()
	for b.Loop() {
		x := pipeline.Acquire()
		x.Dialect, x.Body, x.Model, x.Stream = llm.OpenAIChat, body, "gpt-4o", true
		x.KeyHash, x.TeamID = "key-a", "team-a"
		_ = c.Serve(x, next)
		for {
			if _, err := x.Response.Stream.Next(); err != nil {
				break
			}
		}
		pipeline.Release(x)
	}
}

// BenchmarkKey is the key alone.
func BenchmarkKey(b *testing.B) {
	cfg, _ := compile(config.CacheSettings{})
	x := exchange(llm.OpenAIChat, benchReq)
	b.ReportAllocs()
	for b.Loop() {
		var r request
		k := acquireKeyer()
		k.read(x, &r)
		_, _ = k.key(cfg, x, &r)
		k.release()
	}
}

// TestHitAllocs pins the hit path's allocations: the key string, the
// response and the header slice (3 today; budget 4).
func TestHitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c, next := benchCache(t)
	body := []byte(benchReq)
	if !hitOnce(c, next, body, false) {
		t.Fatal("no hit")
	}
	if n := testing.AllocsPerRun(200, func() { hitOnce(c, next, body, false) }); n > 4 {
		t.Fatalf("%v allocations per hit, budget 4", n)
	}
}
