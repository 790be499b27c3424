package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/testupstream"
)

// The issue's LiteLLM config, unchanged, plus a router section for the
// fault tests.
const fallbackConfig = `
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude-3-5-sonnet
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: fast-fallback
    litellm_params:
      model: mistral/mistral-small-latest
      api_key: os.environ/MISTRAL_API_KEY
router_settings:
  routing_strategy: least-busy
  fallbacks:
    - gpt-4o: [claude-3-5-sonnet, fast-fallback]
`

func newFallbackHarness(t *testing.T, router string) *harness {
	t.Helper()
	// Reuse the harness plumbing with a different config.
	h := newHarnessConfig(t, fallbackConfig+router, config.ServerSettings{})
	return h
}

func TestIssueConfigFallsBackOn429And500(t *testing.T) {
	h := newFallbackHarness(t, "")
	for _, status := range []int{429, 500} {
		h.up.Reset()
		h.up.SetFault("gpt-4o", testupstream.Fault{Statuses: []int{status}, Rate: 1})
		for _, stream := range []bool{false, true} {
			extra := ""
			if stream {
				extra = `,"stream":true`
			}
			resp, b := h.post("/v1/chat/completions", chat("gpt-4o", extra))
			if resp.StatusCode != 200 {
				t.Fatalf("%d stream=%v: status %d %s", status, stream, resp.StatusCode, b)
			}
			if !strings.Contains(string(b), "anthropic reply") {
				t.Fatalf("%d stream=%v: not served by the fallback: %s", status, stream, b)
			}
			if resp.Header.Get("x-litellm-attempted-fallbacks") != "1" || resp.Header.Get("x-litellm-model-id") != "claude-3-5-sonnet-1" {
				t.Fatalf("headers: %v", resp.Header)
			}
		}
		if n := h.up.CountModel("gpt-4o"); n != 2 {
			t.Fatalf("gpt-4o upstream got %d requests, want 2", n)
		}
		if n := h.up.CountModel("claude-3-5-sonnet-20241022"); n != 2 {
			t.Fatalf("claude upstream got %d requests, want 2", n)
		}
	}
	// Both fail: the second fallback serves.
	h.up.SetFault("claude-3-5-sonnet-20241022", testupstream.Fault{Statuses: []int{503}, Rate: 1})
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", ""))
	if resp.StatusCode != 200 || resp.Header.Get("x-litellm-model-id") != "fast-fallback-2" || resp.Header.Get("x-litellm-attempted-fallbacks") != "2" {
		t.Fatalf("second fallback: %d %s %v", resp.StatusCode, b, resp.Header)
	}
	// All fail: the last error reaches the client, typed.
	h.up.SetFault("mistral-small-latest", testupstream.Fault{Statuses: []int{500}, Rate: 1})
	resp, b = h.post("/v1/chat/completions", chat("gpt-4o", ""))
	if resp.StatusCode != 500 || jsonPath(t, b, "error", "type") != "api_error" {
		t.Fatalf("all failing: %d %s", resp.StatusCode, b)
	}
	// gpt-4o has failed more than allowed_fails (3) times this minute, so
	// it is cooling down and not tried; the fallbacks are.
	if got := resp.Header.Get("x-portcullis-attempted-deployments"); got != "claude-3-5-sonnet-1,fast-fallback-2" {
		t.Fatalf("attempted: %q", got)
	}
}

// (a) The primary fails 30% of requests at random with 429/500/503 and the
// fallback is healthy: across 1,000 requests, streamed and not, the client
// sees no failure.
func TestFlakyPrimaryNoClientFailures(t *testing.T) {
	// Cooldowns off (allowed_fails high), so every one of the ~300
	// failures has to be caught by a fallback.
	h := newFallbackHarness(t, "  num_retries: 0\n  allowed_fails: 100000\n")
	h.up.SetFault("gpt-4o", testupstream.Fault{Statuses: []int{429, 500, 503}, Rate: 0.3})
	var failures, served atomic.Int64
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				extra := ""
				if i%2 == 0 {
					extra = `,"stream":true`
				}
				resp, err := http.Post(h.url+"/v1/chat/completions", "application/json", strings.NewReader(chat("gpt-4o", extra)))
				if err != nil {
					failures.Add(1)
					continue
				}
				b := readAll(resp)
				if resp.StatusCode != 200 || strings.Contains(b, `"error"`) || (i%2 == 0 && !strings.HasSuffix(strings.TrimSpace(b), "[DONE]")) {
					failures.Add(1)
					t.Logf("failure %d: %d %s", i, resp.StatusCode, b)
					continue
				}
				served.Add(1)
			}
		}()
	}
	for i := 0; i < 1000; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if failures.Load() != 0 || served.Load() != 1000 {
		t.Fatalf("%d client failures, %d served", failures.Load(), served.Load())
	}
	primary, fallback := h.up.CountModel("gpt-4o"), h.up.CountModel("claude-3-5-sonnet-20241022")
	t.Logf("upstream requests: gpt-4o %d, claude %d", primary, fallback)
	if primary != 1000 || fallback < 200 || fallback > 400 {
		t.Fatalf("gpt-4o %d, claude %d: want every request tried on gpt-4o and about 300 on the fallback", primary, fallback)
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

// (b) A deployment failing repeatedly is cooled down, gets no traffic
// during the cooldown, and gets traffic again after it.
func TestCooldownTakesDeploymentOutAndBack(t *testing.T) {
	h := newFallbackHarness(t, "  num_retries: 0\n  allowed_fails: 1\n  cooldown_time: 1\n")
	h.up.SetFault("gpt-4o", testupstream.Fault{Statuses: []int{500}, Rate: 1})
	for i := 0; i < 2; i++ { // two failures > allowed_fails 1
		if resp, b := h.post("/v1/chat/completions", chat("gpt-4o", "")); resp.StatusCode != 200 {
			t.Fatalf("fallback: %d %s", resp.StatusCode, b)
		}
	}
	before := h.up.CountModel("gpt-4o")
	if before != 2 {
		t.Fatalf("gpt-4o got %d requests before the cooldown", before)
	}
	start := time.Now()
	for time.Since(start) < 700*time.Millisecond {
		if resp, b := h.post("/v1/chat/completions", chat("gpt-4o", "")); resp.StatusCode != 200 {
			t.Fatalf("during cooldown: %d %s", resp.StatusCode, b)
		}
	}
	if n := h.up.CountModel("gpt-4o"); n != before {
		t.Fatalf("a cooled-down deployment got %d requests", n-before)
	}
	rt := h.srv.holder.Current()
	if !strings.Contains(metricsText(t, h), `portcullis_deployment_cooldowns_total{deployment="gpt-4o-0",model="gpt-4o"} 1`) {
		t.Fatalf("cooldown not counted:\n%s", metricsText(t, h))
	}
	_ = rt
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	h.up.SetFault("gpt-4o", testupstream.Fault{})
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", ""))
	if resp.StatusCode != 200 || h.up.CountModel("gpt-4o") != before+1 || resp.Header.Get("x-litellm-model-id") != "gpt-4o-0" {
		t.Fatalf("after the cooldown the deployment should serve again: %d %s %v", resp.StatusCode, b, resp.Header)
	}
}

func metricsText(t *testing.T, h *harness) string {
	_, b := h.get("/metrics")
	return string(b)
}

// (c) A stream whose upstream dies before the first token is served by the
// fallback; one that dies after the first token ends with an error event.
func TestStreamDiesBeforeAndAfterFirstToken(t *testing.T) {
	h := newFallbackHarness(t, "  num_retries: 0\n")
	h.up.SetFault("gpt-4o", testupstream.Fault{Cut: -1})
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", `,"stream":true`))
	ev := events(b)
	if resp.StatusCode != 200 || ev[len(ev)-1][1] != "[DONE]" || !strings.Contains(string(b), "anthropic reply") {
		t.Fatalf("before the first token: %d %q", resp.StatusCode, ev)
	}
	if h.up.CountModel("gpt-4o") != 1 {
		t.Fatal("the primary was not tried")
	}
	h.up.SetFault("gpt-4o", testupstream.Fault{Cut: 2})
	resp, b = h.post("/v1/chat/completions", chat("gpt-4o", `,"stream":true`))
	ev = events(b)
	last := ev[len(ev)-1][1]
	if resp.StatusCode != 200 || !strings.Contains(last, `"error"`) || strings.Contains(string(b), "anthropic reply") {
		t.Fatalf("after the first token: %q", ev)
	}
	var e struct{ Error struct{ Code string } }
	if err := json.Unmarshal([]byte(last), &e); err != nil || e.Error.Code != "upstream_protocol_error" {
		t.Fatalf("error event %s", last)
	}
}

func TestRetriesSameGroupWithBackoff(t *testing.T) {
	h := newHarnessConfig(t, `
model_list:
  - model_name: a
    litellm_params: {model: openai/flaky, api_key: k}
  - model_name: a
    litellm_params: {model: openai/healthy, api_key: k}
router_settings:
  num_retries: 2
portcullis:
  router:
    backoff_base: 1ms
`, config.ServerSettings{})
	h.up.SetFault("flaky", testupstream.Fault{Statuses: []int{503}, Rate: 1})
	for i := 0; i < 30; i++ {
		resp, b := h.post("/v1/chat/completions", chat("a", ""))
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	if h.up.CountModel("healthy") != 30 {
		t.Fatalf("healthy served %d of 30", h.up.CountModel("healthy"))
	}
}

func TestContextWindowAndContentPolicyFallbacks(t *testing.T) {
	h := newHarnessConfig(t, `
model_list:
  - model_name: small
    litellm_params: {model: openai/small, api_key: k}
  - model_name: big
    litellm_params: {model: anthropic/big, api_key: k}
  - model_name: lenient
    litellm_params: {model: mistral/lenient, api_key: k}
router_settings:
  context_window_fallbacks: [{small: [big]}]
  content_policy_fallbacks: [{small: [lenient]}]
  fallbacks: [{small: [lenient]}]
`, config.ServerSettings{})
	// A plain 400 is the client's mistake: no fallback.
	h.up.SetFault("small", testupstream.Fault{Statuses: []int{400}, Rate: 1, Message: "Invalid value for 'temperature'", Code: "invalid_value"})
	if resp, b := h.post("/v1/chat/completions", chat("small", "")); resp.StatusCode != 400 || h.up.CountModel("big")+h.up.CountModel("lenient") != 0 {
		t.Fatalf("plain 400: %d %s", resp.StatusCode, b)
	}
	h.up.SetFault("small", testupstream.Fault{Statuses: []int{400}, Rate: 1,
		Message: "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.", Code: "context_length_exceeded"})
	if resp, b := h.post("/v1/chat/completions", chat("small", "")); resp.StatusCode != 200 || resp.Header.Get("x-litellm-model-id") != "big-1" {
		t.Fatalf("context window: %d %s", resp.StatusCode, b)
	}
	h.up.SetFault("small", testupstream.Fault{Statuses: []int{400}, Rate: 1, Message: "The response was filtered", Code: "content_filter"})
	if resp, b := h.post("/v1/chat/completions", chat("small", "")); resp.StatusCode != 200 || resp.Header.Get("x-litellm-model-id") != "lenient-2" {
		t.Fatalf("content policy: %d %s", resp.StatusCode, b)
	}
}

func TestStreamFirstTokenAndIdleDeadlines(t *testing.T) {
	h := newHarnessConfig(t, `
model_list:
  - model_name: slowstart
    litellm_params: {model: openai/x-delay-500, api_key: k, stream_timeout: 0.1}
  - model_name: latetoken
    litellm_params: {model: openai/x-first-500, api_key: k, stream_timeout: 0.1}
  - model_name: stalls
    litellm_params: {model: openai/x-chunks-5-gap-400, api_key: k, stream_timeout: 0.1}
  - model_name: backup
    litellm_params: {model: anthropic/backup, api_key: k}
  - model_name: steady
    litellm_params: {model: openai/x-chunks-6-gap-60, api_key: k, stream_timeout: 0.1}
router_settings:
  fallbacks: [{slowstart: [backup]}, {stalls: [backup]}, {latetoken: [backup]}]
`, config.ServerSettings{})
	// No response head within the deadline; a head and the role chunk in
	// time, but no token.
	for _, model := range []string{"slowstart", "latetoken"} {
		start := time.Now()
		resp, b := h.post("/v1/chat/completions", chat(model, `,"stream":true`))
		if resp.StatusCode != 200 || resp.Header.Get("x-litellm-model-id") != "backup-3" || !strings.HasSuffix(strings.TrimSpace(string(b)), "[DONE]") {
			t.Fatalf("%s: time to first token: %d %s %v", model, resp.StatusCode, b, resp.Header)
		}
		if time.Since(start) > 450*time.Millisecond {
			t.Fatalf("%s: the first-token deadline did not cut the wait: %v", model, time.Since(start))
		}
	}
	_, stalled := h.post("/v1/chat/completions", chat("stalls", `,"stream":true`))
	ev := events(stalled)
	if last := ev[len(ev)-1][1]; !strings.Contains(last, "upstream_timeout") {
		t.Fatalf("a stalled stream must end with a timeout error event: %q", ev)
	}
	// The first-token deadline bounds the wait for the first token only:
	// a stream that outlasts it, each gap within it, completes (the
	// upstream connection's read deadline moves on once the first token
	// is in).
	start := time.Now()
	resp, b := h.post("/v1/chat/completions", chat("steady", `,"stream":true`))
	if resp.StatusCode != 200 || strings.Contains(string(b), "error") || !strings.HasSuffix(strings.TrimSpace(string(b)), "[DONE]") {
		t.Fatalf("a steady stream longer than its first-token deadline: %d %s", resp.StatusCode, b)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("the stream took %v: the test needs it to outlast the 100ms first-token deadline", d)
	}
}

func TestRequestBodyFallbacksAndTagsAreConsumed(t *testing.T) {
	h := newFallbackHarness(t, "  num_retries: 0\n")
	h.up.SetFault("gpt-4o", testupstream.Fault{Statuses: []int{500}, Rate: 1})
	resp, b := h.post("/v1/chat/completions", `{"model":"gpt-4o","fallbacks":["fast-fallback"],"num_retries":0,"tags":[],"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("x-litellm-model-id") != "fast-fallback-2" {
		t.Fatalf("request fallbacks: %d %s %v", resp.StatusCode, b, resp.Header)
	}
	for _, r := range h.up.Requests() {
		for _, k := range []string{`"fallbacks"`, `"num_retries"`, `"tags"`} {
			if strings.Contains(string(r.Body), k) {
				t.Fatalf("gateway field %s forwarded upstream: %s", k, r.Body)
			}
		}
	}
}

// A group's only deployment, with no fallback, is never cooled down: there
// is nowhere else to send the traffic.
func TestLoneDeploymentIsNotCooledDown(t *testing.T) {
	h := newHarnessConfig(t, `
model_list:
  - model_name: lone
    litellm_params: {model: openai/lone, api_key: k}
router_settings:
  allowed_fails: 0
  num_retries: 0
`, config.ServerSettings{})
	h.up.SetFault("lone", testupstream.Fault{Statuses: []int{503}, Rate: 1})
	for i := 0; i < 5; i++ {
		if r, _ := h.post("/v1/chat/completions", chat("lone", "")); r.StatusCode != 503 {
			t.Fatalf("failing: %d", r.StatusCode)
		}
	}
	h.up.SetFault("lone", testupstream.Fault{})
	if r, b := h.post("/v1/chat/completions", chat("lone", "")); r.StatusCode != 200 {
		t.Fatalf("the lone deployment should serve as soon as it recovers: %d %s", r.StatusCode, b)
	}
}
