package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/sse"
	"github.com/portcullis/portcullis/engine/translate"
)

const chatReq = `{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"Hello"}]}`

func TestHitAndMiss(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}

	miss := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if miss.err != nil || miss.headers[HeaderCache] != "MISS" || miss.hit || !miss.served {
		t.Fatalf("first request: %+v", miss)
	}
	if _, ok := miss.headers[HeaderCacheKey]; ok {
		t.Fatal("the cache key header is sent on hits only")
	}
	hit := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if hit.err != nil || hit.headers[HeaderCache] != "HIT" || !hit.hit {
		t.Fatalf("second request: %+v", hit)
	}
	if up.calls.Load() != 1 {
		t.Fatalf("upstream called %d times", up.calls.Load())
	}
	if !bytes.Equal(hit.body, miss.body) {
		t.Fatalf("hit body differs:\n%s\n%s", hit.body, miss.body)
	}
	if hit.served {
		t.Fatal("a hit must not be priced: x.Served stays nil")
	}
	want := llm.Tokens{Prompt: 19, Completion: 10}
	if hit.tokens != want {
		t.Fatalf("hit tokens %+v, want %+v", hit.tokens, want)
	}
	if hit.saved != 29*1000 {
		t.Fatalf("saved cost %d", hit.saved)
	}
	if hit.group != "gpt-4o" {
		t.Fatalf("model group %q", hit.group)
	}
	if k := hit.headers[HeaderCacheKey]; len(k) != 64 {
		t.Fatalf("cache key %q", k)
	}
	if n := counter(c.m.hits); n != 1 {
		t.Fatalf("hits metric %v", n)
	}
	if n := counter(c.m.misses); n != 1 {
		t.Fatalf("misses metric %v", n)
	}
	if n := counter(c.m.stores); n != 1 {
		t.Fatalf("stores metric %v", n)
	}
}

func TestNamespacePrefixesKey(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{Namespace: "prod"}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	hit := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if k := hit.headers[HeaderCacheKey]; !strings.HasPrefix(k, "prod:") || len(k) != 69 {
		t.Fatalf("key %q", k)
	}
	// A per-request namespace is another key space.
	other := serve(t, c, exchange(llm.OpenAIChat, `{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"Hello"}],"cache":{"namespace":"eval"}}`), up.next)
	if other.hit {
		t.Fatal("another namespace hit")
	}
}

func TestTTLExpiry(t *testing.T) {
	clk := newClock()
	c := newTestCache(t, config.CacheSettings{TTL: time.Minute}, Options{Now: clk.Now})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	clk.Add(59 * time.Second)
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); !r.hit {
		t.Fatal("entry expired early")
	}
	clk.Add(2 * time.Second)
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit {
		t.Fatal("entry outlived its TTL")
	}
	if up.calls.Load() != 2 {
		t.Fatalf("upstream called %d times", up.calls.Load())
	}
}

func TestRistrettoTTL(t *testing.T) {
	// The in-process store expires entries on its own clock too.
	c := newTestCache(t, config.CacheSettings{TTL: 300 * time.Millisecond}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); !r.hit {
		t.Fatal("no hit")
	}
	time.Sleep(400 * time.Millisecond)
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit {
		t.Fatal("hit after the TTL")
	}
}

func TestTeamIsolation(t *testing.T) {
	for _, tc := range []struct {
		scope       string
		a, b        func(*pipeline.Exchange)
		shouldShare bool
	}{
		{"team", team("A"), team("B"), false},
		{"team", team("A"), func(x *pipeline.Exchange) { x.TeamID = "A"; x.KeyHash = "other-key" }, true},
		{"team", team(""), func(x *pipeline.Exchange) { x.TeamID = ""; x.KeyHash = "other-key" }, false},
		{"key", team("A"), func(x *pipeline.Exchange) { x.TeamID = "A"; x.KeyHash = "other-key" }, false},
		{"global", team("A"), team("B"), true},
	} {
		t.Run(tc.scope, func(t *testing.T) {
			c := newTestCache(t, config.CacheSettings{Scope: tc.scope}, Options{})
			upA := &upstream{d: llm.OpenAIChat, body: []byte(`{"id":"a","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"answer for A"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)}
			upB := &upstream{d: llm.OpenAIChat, body: []byte(`{"id":"b","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"answer for B"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)}
			serve(t, c, exchange(llm.OpenAIChat, chatReq, tc.a), upA.next)
			r := serve(t, c, exchange(llm.OpenAIChat, chatReq, tc.b), upB.next)
			if r.hit != tc.shouldShare {
				t.Fatalf("hit=%v, want %v", r.hit, tc.shouldShare)
			}
			if !tc.shouldShare && strings.Contains(string(r.body), "answer for A") {
				t.Fatal("B received A's answer")
			}
			// A still gets its own answer.
			if r := serve(t, c, exchange(llm.OpenAIChat, chatReq, tc.a), upA.next); !r.hit || !strings.Contains(string(r.body), "answer for A") {
				t.Fatalf("A: hit=%v body=%s", r.hit, r.body)
			}
		})
	}
}

// roundTrip checks a stored answer against the original, both ways.
func TestStreamRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		d             llm.Dialect
		req           string
		text          string // the answer's text (joined)
		tools         []string
	}{
		{"chat text", "chat_stream/text_usage.sse", llm.OpenAIChat, chatReq, "Hello! How can I \"help\"\nyou today?", nil},
		{"chat tools", "chat_stream/tool.sse", llm.OpenAIChat, chatReq, "Let me check both cities.",
			[]string{`get_current_weather{"location": "Boston, MA"}`, `get_current_weather{"location": "Paris, FR"}`}},
		{"chat reasoning", "chat_stream/reasoning.sse", llm.OpenAIChat, chatReq, "Hi there!", nil},
		{"completion", "chat_stream/text_usage.completion.golden.sse", llm.OpenAICompletion,
			`{"model":"gpt-4o","prompt":"Hello","temperature":0,"stream_options":{"include_usage":true}}`, "Hello! How can I \"help\"\nyou today?", nil},
		{"anthropic text", "anthropic_stream/text.sse", llm.AnthropicMessages,
			`{"model":"claude","max_tokens":100,"temperature":0,"messages":[{"role":"user","content":"Hello"}]}`,
			"Hello! Here is a \"quote\" and a line break:\n<done>", nil},
		{"anthropic tools", "anthropic_stream/tool.sse", llm.AnthropicMessages,
			`{"model":"claude","max_tokens":100,"temperature":0,"messages":[{"role":"user","content":"Weather?"}]}`,
			"Okay, let's check the weather for San Francisco, CA:",
			[]string{`get_weather{"location": "San Francisco, CA", "unit": "fahrenheit"}`, `get_time{"timezone": "America/Los_Angeles"}`}},
		{"anthropic thinking", "anthropic_stream/thinking.sse", llm.AnthropicMessages,
			`{"model":"claude","max_tokens":100,"temperature":0,"messages":[{"role":"user","content":"27*453"}]}`,
			"27 * 453 = 12,231", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, config.CacheSettings{}, Options{})
			evs := events(t, tc.fixture)
			up := &upstream{d: tc.d, events: evs}

			// 1. A streamed miss: the client gets the upstream's events
			// unchanged, and the answer is stored when the stream ends.
			first := serve(t, c, exchange(tc.d, tc.req, streaming), up.next)
			if first.err != nil || first.hit {
				t.Fatalf("first: %+v", first)
			}
			if !first.stream.closed.Load() {
				t.Fatal("upstream stream not closed")
			}
			want := first.tokens // zero for the tool fixture, which has no usage chunk

			// 2. A non-streamed request gets the assembled body.
			body := serve(t, c, exchange(tc.d, tc.req), up.next)
			if !body.hit {
				t.Fatalf("no hit for the complete body: %+v", body)
			}
			checkAnswer(t, tc.d, body.body, tc.text, tc.tools)
			if body.tokens != want {
				t.Fatalf("body tokens %+v, want %+v", body.tokens, want)
			}
			if u, _ := usageOf(tc.d, body.body); u != want {
				t.Fatalf("body usage %+v, want %+v", u, want)
			}

			// 3. A streamed request gets a replay with the same text and
			// usage, which assembles back into the same body.
			replayed := serve(t, c, exchange(tc.d, tc.req, streaming, func(x *pipeline.Exchange) { x.IncludeUsage = true }), up.next)
			if !replayed.hit {
				t.Fatal("no hit for the stream")
			}
			if replayed.tokens != want {
				t.Fatalf("replayed usage %+v, want %+v", replayed.tokens, want)
			}
			again := assemble(t, tc.d, replayed.events, llm.Tokens{})
			if !jsonEqual(again, body.body) {
				t.Fatalf("replay does not assemble to the stored body:\n%s\n%s", again, body.body)
			}
			if up.calls.Load() != 1 {
				t.Fatalf("upstream called %d times", up.calls.Load())
			}
		})
	}
}

func TestBodyRoundTrip(t *testing.T) {
	// A complete upstream body replays as a stream that assembles back to
	// the same answer.
	for _, tc := range []struct {
		fixture string
		d       llm.Dialect
		text    string
		tools   []string
	}{
		{"chat_response/text.json", llm.OpenAIChat, "Hello! How can I assist you today?", nil},
		{"chat_response/tool_calls.json", llm.OpenAIChat, "",
			[]string{"get_current_weather{\n\"location\": \"Boston, MA\"\n}", `get_current_weather{"location": "Pa`}},
		{"chat_response/text.completion.golden.json", llm.OpenAICompletion, "Hello! How can I assist you today?", nil},
		{"anthropic_response/text.json", llm.AnthropicMessages, "Hi! My name is Claude.", nil},
		{"anthropic_response/tool_use.json", llm.AnthropicMessages, "I'll check the current weather in San Francisco for you.",
			[]string{`get_weather{"location": "San Francisco, CA", "unit": "celsius"}`}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			c := newTestCache(t, config.CacheSettings{}, Options{})
			body := fixture(t, tc.fixture)
			req := `{"model":"m","temperature":0,"messages":[{"role":"user","content":"x"}]}`
			up := &upstream{d: tc.d, body: body}
			first := serve(t, c, exchange(tc.d, req), up.next)
			want, _ := usageOf(tc.d, body)
			if first.tokens != want {
				t.Fatalf("tokens %+v, want %+v", first.tokens, want)
			}
			r := serve(t, c, exchange(tc.d, req, streaming, func(x *pipeline.Exchange) { x.IncludeUsage = true }), up.next)
			if !r.hit {
				t.Fatal("no hit")
			}
			if r.tokens != want {
				t.Fatalf("replayed usage %+v, want %+v", r.tokens, want)
			}
			got := assemble(t, tc.d, r.events, llm.Tokens{})
			checkAnswer(t, tc.d, got, tc.text, tc.tools)
			if u, _ := usageOf(tc.d, got); u != want {
				t.Fatalf("assembled usage %+v, want %+v", u, want)
			}
			if id := gjson.GetBytes(got, "id").Str; id != gjson.GetBytes(body, "id").Str {
				t.Fatalf("replayed id %q", id)
			}
		})
	}
}

func TestReplayShapes(t *testing.T) {
	body := fixture(t, "chat_response/text.json")
	evs := drain(t, newReplay(llm.OpenAIChat, body, llm.Tokens{}, false))
	if !evs[len(evs)-1].IsDone() {
		t.Fatal("no [DONE]")
	}
	if r := gjson.ParseBytes(evs[0].Data); r.Get("choices.0.delta.role").Str != "assistant" || r.Get("object").Str != "chat.completion.chunk" {
		t.Fatalf("first chunk %s", evs[0].Data)
	}
	u := gjson.ParseBytes(evs[len(evs)-2].Data)
	if u.Get("choices.#").Int() != 0 || u.Get("usage.total_tokens").Int() != 29 {
		t.Fatalf("usage chunk %s", evs[len(evs)-2].Data)
	}
	if f := gjson.ParseBytes(evs[len(evs)-3].Data); f.Get("choices.0.finish_reason").Str != "stop" {
		t.Fatalf("finish chunk %s", evs[len(evs)-3].Data)
	}

	// Long text is split into a few chunks, on rune boundaries.
	long := strings.Repeat("héllo wörld ", 400)
	lb := []byte(`{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` + long + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`)
	evs = drain(t, newReplay(llm.OpenAIChat, lb, llm.Tokens{}, true))
	var text strings.Builder
	n := 0
	for _, ev := range evs {
		if c := gjson.GetBytes(ev.Data, "choices.0.delta.content"); c.Type == gjson.String && c.Str != "" {
			text.WriteString(c.Str)
			n++
		}
	}
	if text.String() != long || n < 3 || n > 8 {
		t.Fatalf("%d content chunks, text intact=%v", n, text.String() == long)
	}

	// Anthropic: the standard sequence.
	evs = drain(t, newReplay(llm.AnthropicMessages, fixture(t, "anthropic_response/tool_use.json"), llm.Tokens{}, false))
	var names []string
	for _, ev := range evs {
		names = append(names, string(ev.Name))
		if typ := gjson.GetBytes(ev.Data, "type").Str; typ != string(ev.Name) {
			t.Fatalf("event %s carries type %s", ev.Name, typ)
		}
	}
	wantNames := "message_start content_block_start content_block_delta content_block_delta content_block_stop " +
		"content_block_start content_block_delta content_block_stop content_block_start content_block_delta content_block_stop " +
		"message_delta message_stop"
	if got := strings.Join(names, " "); got != wantNames {
		t.Fatalf("events:\n%s\nwant\n%s", got, wantNames)
	}

	// Completions: no usage chunk unless asked for.
	cb := fixture(t, "chat_response/text.completion.golden.json")
	for _, inc := range []bool{false, true} {
		evs = drain(t, newReplay(llm.OpenAICompletion, cb, llm.Tokens{}, inc))
		hasUsage := false
		for _, ev := range evs {
			hasUsage = hasUsage || gjson.GetBytes(ev.Data, "usage").IsObject()
		}
		if hasUsage != inc {
			t.Fatalf("include_usage=%v: usage chunk %v", inc, hasUsage)
		}
	}
}

func TestStreamUsageHiddenFromFilters(t *testing.T) {
	// The client did not ask for usage: the server drops the usage chunk
	// before the filters, so the stored usage comes from x.Tokens.
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, events: events(t, "chat_stream/text_usage.sse")}
	first := serve(t, c, exchange(llm.OpenAIChat, chatReq, streaming), up.next)
	for _, ev := range first.events {
		if gjson.GetBytes(ev.Data, "usage").IsObject() {
			t.Fatal("usage chunk reached a client that did not ask for it")
		}
	}
	r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if !r.hit || r.tokens != first.tokens || r.tokens.Prompt != 1200 || r.tokens.CachedRead != 1024 {
		t.Fatalf("hit=%v tokens %+v (stream %+v)", r.hit, r.tokens, first.tokens)
	}
}

func TestNotCached(t *testing.T) {
	text := events(t, "chat_stream/text_usage.sse")
	for _, tc := range []struct {
		name string
		up   *upstream
		x    func(*pipeline.Exchange)
	}{
		{"upstream error", &upstream{d: llm.OpenAIChat, err: errs.New(500, errs.CodeUpstream, "boom")}, nil},
		{"non-200", &upstream{d: llm.OpenAIChat, status: 500, body: []byte(`{"error":{"message":"x"}}`)}, nil},
		{"error body", &upstream{d: llm.OpenAIChat, body: []byte(`{"error":{"message":"x"}}`)}, nil},
		{"stream cut", &upstream{d: llm.OpenAIChat, events: text[:3], end: io.ErrUnexpectedEOF}, streaming},
		{"stream without terminal event", &upstream{d: llm.OpenAIChat, events: text[:len(text)-1]}, streaming},
		{"error event", &upstream{d: llm.OpenAIChat, events: append(append([]sse.Event{}, text[:2]...),
			sse.Event{Data: []byte(`{"error":{"message":"overloaded"}}`)})}, streaming},
		{"logprobs", &upstream{d: llm.OpenAIChat, events: []sse.Event{
			{Data: []byte(`{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[]}}]}`)},
			{Data: []byte(`[DONE]`)}}}, streaming},
		{"anthropic error event", &upstream{d: llm.AnthropicMessages, events: events(t, "anthropic_stream/error.sse")}, streaming},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, config.CacheSettings{}, Options{})
			d := tc.up.d
			req := chatReq
			if d == llm.AnthropicMessages {
				req = `{"model":"claude","max_tokens":10,"temperature":0,"messages":[{"role":"user","content":"hi"}]}`
			}
			mods := []func(*pipeline.Exchange){}
			if tc.x != nil {
				mods = append(mods, tc.x)
			}
			serve(t, c, exchange(d, req, mods...), tc.up.next)
			if n := c.flights.pending(); n != 0 {
				t.Fatalf("%d flights left open", n)
			}
			// Nothing stored: the next identical request goes upstream.
			ok := &upstream{d: d, body: fixture(t, "chat_response/text.json")}
			if d == llm.AnthropicMessages {
				ok.body = fixture(t, "anthropic_response/text.json")
			}
			if r := serve(t, c, exchange(d, req), ok.next); r.hit || ok.calls.Load() != 1 {
				t.Fatalf("a failed answer was cached: %+v", r)
			}
			if n := counter(c.m.stores); n != 1 {
				t.Fatalf("stores %v", n)
			}
		})
	}
}

func TestFlightReleasedWhenServerFailsBeforeStreaming(t *testing.T) {
	// The server may fail after the chain (a stream that errors on its
	// first event): the filters never see the end, the guarded stream's
	// Close still finishes the flight.
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, events: events(t, "chat_stream/text_usage.sse")}
	x := exchange(llm.OpenAIChat, chatReq, streaming)
	if err := c.Serve(x, up.next); err != nil {
		t.Fatal(err)
	}
	if c.flights.pending() != 1 {
		t.Fatal("no flight in progress")
	}
	x.Response.Release()
	if c.flights.pending() != 0 {
		t.Fatal("flight left open after the stream closed")
	}
}

func TestSingleFlight(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			c := newTestCache(t, config.CacheSettings{}, Options{})
			up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json"),
				events: events(t, "chat_stream/text_usage.sse"), delay: 100 * time.Millisecond}
			const n = 100
			var wg sync.WaitGroup
			results := make([]result, n)
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					var mods []func(*pipeline.Exchange)
					if stream && i%2 == 0 {
						mods = append(mods, streaming)
					}
					results[i] = serve(t, c, exchange(llm.OpenAIChat, chatReq, mods...), up.next)
				}()
			}
			close(start)
			wg.Wait()
			if got := up.calls.Load(); got != 1 {
				t.Fatalf("upstream called %d times for %d identical requests", got, n)
			}
			hits := 0
			for _, r := range results {
				if r.err != nil {
					t.Fatal(r.err)
				}
				if r.hit {
					hits++
					if len(r.body) == 0 && len(r.events) == 0 {
						t.Fatal("empty hit")
					}
				}
			}
			if hits != n-1 {
				t.Fatalf("%d hits", hits)
			}
			if c.flights.pending() != 0 {
				t.Fatal("flight left open")
			}
		})
	}
}

func TestSingleFlightLeaderFails(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{}, Options{})
	var mu sync.Mutex
	first := true
	good := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	next := func(x *pipeline.Exchange) error {
		mu.Lock()
		f := first
		first = false
		mu.Unlock()
		if f {
			time.Sleep(100 * time.Millisecond)
			return errs.New(503, errs.CodeUpstream, "leader failed")
		}
		return good.next(x)
	}
	const n = 10
	var wg sync.WaitGroup
	errsSeen := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := serve(t, c, exchange(llm.OpenAIChat, chatReq), next)
			errsSeen <- r.err
		}()
	}
	wg.Wait()
	close(errsSeen)
	failed := 0
	for err := range errsSeen {
		if err != nil {
			failed++
		}
	}
	// The leader's own request fails; its followers went upstream
	// themselves and succeeded.
	if failed != 1 {
		t.Fatalf("%d requests failed", failed)
	}
	if good.calls.Load() < 1 {
		t.Fatal("followers never went upstream")
	}
}

func TestFollowerWaitBounded(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{}, Options{MaxWait: 50 * time.Millisecond})
	slow := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json"), delay: 500 * time.Millisecond}
	go serve(t, c, exchange(llm.OpenAIChat, chatReq), slow.next)
	time.Sleep(20 * time.Millisecond)
	fast := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	start := time.Now()
	r := serve(t, c, exchange(llm.OpenAIChat, chatReq), fast.next)
	if r.hit || fast.calls.Load() != 1 || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("hit=%v calls=%d after %s", r.hit, fast.calls.Load(), time.Since(start))
	}
}

func TestControls(t *testing.T) {
	resp := func(text string) []byte {
		return []byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + text + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}
	with := func(ctl string) string {
		return `{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"Hello"}],"cache":` + ctl + `}`
	}
	hdr := func(v string) func(*pipeline.Exchange) {
		return func(x *pipeline.Exchange) { x.Header = headers{"Cache-Control": v} }
	}

	t.Run("no-cache reads fresh and stores", func(t *testing.T) {
		c := newTestCache(t, config.CacheSettings{}, Options{})
		serve(t, c, exchange(llm.OpenAIChat, chatReq), (&upstream{d: llm.OpenAIChat, body: resp("old")}).next)
		for _, x := range []*pipeline.Exchange{
			exchange(llm.OpenAIChat, with(`{"no-cache":true}`)),
			exchange(llm.OpenAIChat, chatReq, hdr("no-cache")),
		} {
			up := &upstream{d: llm.OpenAIChat, body: resp("new")}
			r := serve(t, c, x, up.next)
			if r.hit || up.calls.Load() != 1 || r.headers[HeaderCache] != "MISS" {
				t.Fatalf("no-cache was answered from the cache: %+v", r)
			}
		}
		r := serve(t, c, exchange(llm.OpenAIChat, chatReq), (&upstream{d: llm.OpenAIChat, body: resp("x")}).next)
		if !r.hit || !strings.Contains(string(r.body), "new") {
			t.Fatalf("the no-cache answer was not stored: %s", r.body)
		}
	})
	t.Run("no-store", func(t *testing.T) {
		for _, x := range []*pipeline.Exchange{
			exchange(llm.OpenAIChat, with(`{"no-store":true}`)),
			exchange(llm.OpenAIChat, chatReq, hdr("no-store")),
		} {
			c := newTestCache(t, config.CacheSettings{}, Options{})
			serve(t, c, x, (&upstream{d: llm.OpenAIChat, body: resp("a")}).next)
			up := &upstream{d: llm.OpenAIChat, body: resp("b")}
			if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit {
				t.Fatal("a no-store answer was stored")
			}
		}
		// no-store still reads.
		c := newTestCache(t, config.CacheSettings{}, Options{})
		serve(t, c, exchange(llm.OpenAIChat, chatReq), (&upstream{d: llm.OpenAIChat, body: resp("a")}).next)
		if r := serve(t, c, exchange(llm.OpenAIChat, with(`{"no-store":true}`)), (&upstream{d: llm.OpenAIChat, body: resp("b")}).next); !r.hit {
			t.Fatal("no-store did not read the cache")
		}
	})
	t.Run("ttl", func(t *testing.T) {
		clk := newClock()
		c := newTestCache(t, config.CacheSettings{TTL: time.Hour}, Options{Now: clk.Now})
		serve(t, c, exchange(llm.OpenAIChat, with(`{"ttl":5}`)), (&upstream{d: llm.OpenAIChat, body: resp("a")}).next)
		clk.Add(4 * time.Second)
		if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), (&upstream{d: llm.OpenAIChat, body: resp("b")}).next); !r.hit {
			t.Fatal("expired before its ttl")
		}
		clk.Add(2 * time.Second)
		if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), (&upstream{d: llm.OpenAIChat, body: resp("b")}).next); r.hit {
			t.Fatal("outlived its ttl")
		}
	})
	t.Run("s-maxage and max-age", func(t *testing.T) {
		for _, tc := range []struct {
			x   *pipeline.Exchange
			hit bool
		}{
			{exchange(llm.OpenAIChat, with(`{"s-maxage":60}`)), true},
			{exchange(llm.OpenAIChat, with(`{"s-maxage":10}`)), false},
			{exchange(llm.OpenAIChat, with(`{"s-max-age":"10"}`)), false},
			{exchange(llm.OpenAIChat, chatReq, hdr("max-age=60")), true},
			{exchange(llm.OpenAIChat, chatReq, hdr("public, max-age=10")), false},
			{exchange(llm.OpenAIChat, chatReq, hdr("s-maxage=10")), false},
		} {
			clk := newClock()
			c := newTestCache(t, config.CacheSettings{TTL: time.Hour}, Options{Now: clk.Now})
			serve(t, c, exchange(llm.OpenAIChat, chatReq), (&upstream{d: llm.OpenAIChat, body: resp("a")}).next)
			clk.Add(30 * time.Second)
			up := &upstream{d: llm.OpenAIChat, body: resp("a")}
			if r := serve(t, c, tc.x, up.next); r.hit != tc.hit {
				t.Fatalf("%s %v: hit=%v", tc.x.Body, tc.x.Header, r.hit)
			}
			// A too-old entry is refreshed by the answer fetched instead.
			if !tc.hit {
				if r := serve(t, c, exchange(llm.OpenAIChat, with(`{"s-maxage":1}`)), up.next); !r.hit {
					t.Fatal("the fresh answer was not stored")
				}
			}
		}
	})
	t.Run("default_off", func(t *testing.T) {
		c := newTestCache(t, config.CacheSettings{DefaultOff: true}, Options{})
		up := &upstream{d: llm.OpenAIChat, body: resp("a")}
		serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
		if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit || r.headers[HeaderCache] != "" {
			t.Fatal("default_off cached a request that did not opt in")
		}
		optIn := `{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"cache":{"use-cache":true}}`
		serve(t, c, exchange(llm.OpenAIChat, optIn), up.next)
		if r := serve(t, c, exchange(llm.OpenAIChat, optIn), up.next); !r.hit {
			t.Fatal("use-cache did not opt in")
		}
	})
}

func TestDeterminism(t *testing.T) {
	body := fixture(t, "chat_response/text.json")
	for _, tc := range []struct {
		req    string
		d      llm.Dialect
		all    bool
		cached bool
	}{
		{`{"model":"m","messages":[{"role":"user","content":"x"}]}`, llm.OpenAIChat, false, false},
		{`{"model":"m","temperature":0.7,"messages":[{"role":"user","content":"x"}]}`, llm.OpenAIChat, false, false},
		{`{"model":"m","temperature":0.7,"messages":[{"role":"user","content":"x"}]}`, llm.OpenAIChat, true, true},
		{`{"model":"m","temperature":0.0,"messages":[{"role":"user","content":"x"}]}`, llm.OpenAIChat, false, true},
		{`{"model":"m","seed":42,"temperature":1,"messages":[{"role":"user","content":"x"}]}`, llm.OpenAIChat, false, true},
		{`{"model":"m","input":"hello"}`, llm.OpenAIEmbedding, false, true},
	} {
		c := newTestCache(t, config.CacheSettings{AllRequests: tc.all}, Options{})
		b := body
		if tc.d == llm.OpenAIEmbedding {
			b = []byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}`)
		}
		up := &upstream{d: tc.d, body: b}
		first := serve(t, c, exchange(tc.d, tc.req), up.next)
		r := serve(t, c, exchange(tc.d, tc.req), up.next)
		if r.hit != tc.cached {
			t.Fatalf("%s all=%v: hit=%v", tc.req, tc.all, r.hit)
		}
		if !tc.cached && (first.headers[HeaderCache] != "" || r.headers[HeaderCache] != "") {
			t.Fatal("x-cache on a request the cache does not handle")
		}
	}
}

func TestCallTypes(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{CallTypes: []string{"embeddings"}}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit {
		t.Fatal("chat cached with call_types [embeddings]")
	}
	if _, err := New(config.CacheSettings{CallTypes: []string{"images"}}, Options{}); err == nil {
		t.Fatal("unknown call type accepted")
	}
	if _, err := New(config.CacheSettings{Scope: "org"}, Options{}); err == nil {
		t.Fatal("unknown scope accepted")
	}
}

func TestCrossDialectBody(t *testing.T) {
	// An Anthropic upstream serving a chat client: the cache translates
	// once, hands the server the chat body, and stores that.
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.AnthropicMessages, body: fixture(t, "anthropic_response/text.json")}
	first := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if gjson.GetBytes(first.body, "choices.0.message.content").Str != "Hi! My name is Claude." {
		t.Fatalf("body %s", first.body)
	}
	r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if !r.hit || !bytes.Equal(r.body, first.body) {
		t.Fatalf("hit=%v %s", r.hit, r.body)
	}
}

func TestStoredBodyNotMutated(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	x := exchange(llm.OpenAIChat, chatReq)
	if err := c.Serve(x, up.next); err != nil || !x.CacheHit {
		t.Fatal("no hit")
	}
	stored := append([]byte(nil), x.Response.Body...)
	// The server copies the body into the client response; a filter that
	// changes it returns a new slice (sjson never edits in place).
	x2 := exchange(llm.OpenAIChat, chatReq)
	_ = c.Serve(x2, up.next)
	if &x2.Response.Body[0] != &x.Response.Body[0] {
		t.Fatal("hits do not share the stored body")
	}
	if !bytes.Equal(x.Response.Body, stored) {
		t.Fatal("stored body changed")
	}
}

func TestEntryEncoding(t *testing.T) {
	e := entry{dialect: llm.AnthropicMessages, created: 1, expires: 2, cost: 3,
		tokens: llm.Tokens{Prompt: 4, Completion: 5, CachedRead: 6, CacheWrite: 7, Reasoning: 8}, group: "claude", body: []byte(`{"x":1}`)}
	raw := e.encode()
	var d entry
	if err := d.decode(raw); err != nil {
		t.Fatal(err)
	}
	if d.dialect != e.dialect || d.created != 1 || d.expires != 2 || d.cost != 3 || d.tokens != e.tokens || d.group != "claude" || string(d.body) != `{"x":1}` {
		t.Fatalf("%+v", d)
	}
	raw[0] = 2
	if d.decode(raw) == nil {
		t.Fatal("foreign version decoded")
	}
	if d.decode(raw[:10]) == nil {
		t.Fatal("short entry decoded")
	}
}

// mapStore is a Store over a map (another backend, as Redis would be).
type mapStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *mapStore) Get(_ context.Context, k string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok, nil
}

func (s *mapStore) Set(_ context.Context, k string, v []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = append([]byte(nil), v...)
	return nil
}

func (s *mapStore) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

func TestCustomStore(t *testing.T) {
	st := &mapStore{m: map[string][]byte{}}
	c := newTestCache(t, config.CacheSettings{}, Options{Store: st})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if len(st.m) != 1 {
		t.Fatalf("%d entries", len(st.m))
	}
	for k := range st.m {
		st.m[k] = []byte("garbage") // a foreign entry reads as a miss
	}
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit {
		t.Fatal("garbage served")
	}
	failing := &failStore{}
	c2 := newTestCache(t, config.CacheSettings{}, Options{Store: failing})
	if r := serve(t, c2, exchange(llm.OpenAIChat, chatReq), up.next); r.err != nil || r.hit {
		t.Fatalf("a failing store must not fail the request: %+v", r)
	}
}

type failStore struct{}

func (failStore) Get(context.Context, string) ([]byte, bool, error) {
	return nil, false, errors.New("down")
}
func (failStore) Set(context.Context, string, []byte, time.Duration) error {
	return errors.New("down")
}
func (failStore) Delete(context.Context, string) error { return errors.New("down") }

func TestEvictionBound(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{MaxBytes: 64 << 10, AllRequests: true}, Options{})
	body := []byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("a", 4000) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	up := &upstream{d: llm.OpenAIChat, body: body}
	for i := range 100 {
		serve(t, c, exchange(llm.OpenAIChat, fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"%d"}]}`, i)), up.next)
	}
	c.own().c.Wait()
	if used := c.own().c.MaxCost() - c.own().c.RemainingCost(); used > 64<<10 {
		t.Fatalf("%d bytes held over a 64 KiB bound", used)
	}
	if counter(c.m.evicted) == 0 {
		t.Fatal("no evictions counted")
	}
}

func TestReconfigure(t *testing.T) {
	c := newTestCache(t, config.CacheSettings{}, Options{})
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next)
	if err := c.Reconfigure(config.CacheSettings{Enabled: false}); err != nil {
		t.Fatal(err)
	}
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit {
		t.Fatal("hit while disabled")
	}
	if err := c.Reconfigure(config.CacheSettings{Enabled: true, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); !r.hit {
		t.Fatal("entries lost across a reload")
	}
	if len(c.Collectors()) != 4 || c.Middleware().Name() != "cache" {
		t.Fatal("collectors or name")
	}
}

// checkAnswer checks the text and tool calls of a complete body.
func checkAnswer(t testing.TB, d llm.Dialect, body []byte, text string, tools []string) {
	t.Helper()
	var gotText string
	var gotTools []string
	r := gjson.ParseBytes(body)
	switch d {
	case llm.OpenAIChat:
		gotText = r.Get("choices.0.message.content").Str
		r.Get("choices.0.message.tool_calls").ForEach(func(_, tc gjson.Result) bool {
			gotTools = append(gotTools, tc.Get("function.name").Str+tc.Get("function.arguments").Str)
			if tc.Get("id").Str == "" {
				t.Errorf("tool call without id: %s", tc.Raw)
			}
			return true
		})
	case llm.OpenAICompletion:
		gotText = r.Get("choices.0.text").Str
	case llm.AnthropicMessages:
		r.Get("content").ForEach(func(_, b gjson.Result) bool {
			switch b.Get("type").Str {
			case "text":
				gotText += b.Get("text").Str
			case "tool_use":
				gotTools = append(gotTools, b.Get("name").Str+compactJSON(b.Get("input").Raw))
			}
			return true
		})
		for i := range tools {
			tools[i] = tools[i][:strings.IndexByte(tools[i], '{')] + compactJSON(tools[i][strings.IndexByte(tools[i], '{'):])
		}
	}
	if gotText != text {
		t.Fatalf("text %q, want %q\n%s", gotText, text, body)
	}
	if strings.Join(gotTools, "|") != strings.Join(tools, "|") {
		t.Fatalf("tools %q, want %q", gotTools, tools)
	}
}

func compactJSON(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}

func usageOf(d llm.Dialect, body []byte) (llm.Tokens, bool) {
	return translate.UsageFromBody(d, body)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// counter reads a counter's value.
func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// A cache that is disabled builds no store (no ristretto buffers, no
// goroutine) until a reload enables it; the admin endpoints answer
// meanwhile, and once enabled it stores and hits as usual.
func TestDisabledCacheBuildsNoStore(t *testing.T) {
	c, err := New(config.CacheSettings{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if c.box.Load() != nil {
		t.Fatal("a disabled cache built a store")
	}
	up := &upstream{d: llm.OpenAIChat, body: fixture(t, "chat_response/text.json")}
	for range 2 {
		if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit || r.err != nil {
			t.Fatalf("disabled: %+v", r)
		}
	}
	if code, _ := callAdmin(t, c, "GET", "/cache/ping", ""); code != 503 {
		t.Fatalf("ping while disabled: %d", code)
	}
	if code, _ := callAdmin(t, c, "POST", "/cache/flushall", ""); code != 200 {
		t.Fatalf("flushall while never enabled: %d", code)
	}
	if code, _ := callAdmin(t, c, "POST", "/cache/delete", `{"keys":["k"]}`); code != 200 {
		t.Fatalf("delete while never enabled: %d", code)
	}
	if !errors.Is(c.Ping(context.Background()), ErrNoStore) {
		t.Fatal("Ping without a store")
	}
	if err := c.Reconfigure(config.CacheSettings{Enabled: true, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if c.own() == nil {
		t.Fatal("enabling the cache built no store")
	}
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); r.hit {
		t.Fatal("hit before anything was stored")
	}
	if r := serve(t, c, exchange(llm.OpenAIChat, chatReq), up.next); !r.hit {
		t.Fatal("no hit once enabled")
	}
	if code, out := callAdmin(t, c, "GET", "/cache/ping", ""); code != 200 || out["cache_type"] != "local" {
		t.Fatalf("ping once enabled: %d %v", code, out)
	}
}
