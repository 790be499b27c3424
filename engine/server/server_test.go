package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/telemetry"
	"github.com/portcullis/portcullis/engine/testupstream"
)

// harness is a gateway on loopback in front of the fake upstream.
type harness struct {
	t    testing.TB
	up   *testupstream.Server
	srv  *Server
	url  string
	done chan error
}

const testConfig = `
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: mistral
    litellm_params:
      model: mistral/mistral-small-latest
      api_key: os.environ/MISTRAL_API_KEY
  - model_name: openai-429
    litellm_params:
      model: openai/gpt-4o-fail-429
      api_key: sk-secret-openai-key
  - model_name: openai-401
    litellm_params:
      model: openai/gpt-4o-fail-401
      api_key: sk-secret-openai-key
  - model_name: claude-529
    litellm_params:
      model: anthropic/claude-fail-529
      api_key: sk-ant-secret
  - model_name: openai-cut
    litellm_params:
      model: openai/gpt-4o-cut-3-chunks-10
      api_key: sk-test
  - model_name: claude-cut
    litellm_params:
      model: anthropic/claude-cut-3-chunks-10
      api_key: sk-ant-test
  - model_name: long
    litellm_params:
      model: openai/gpt-4o-chunks-2000
      api_key: sk-test
  - model_name: slow
    litellm_params:
      model: openai/gpt-4o-chunks-100-gap-10
      api_key: sk-test
  - model_name: mock
    litellm_params:
      model: mock/m
  - model_name: mock-embed
    litellm_params:
      model: mock/e
  - model_name: openai-embed
    litellm_params:
      model: openai/text-embedding-3-small
      api_key: sk-test
`

func newHarness(t testing.TB, extra string, settings config.ServerSettings) *harness {
	t.Helper()
	return newHarnessConfig(t, testConfig+extra, settings)
}

func newHarnessConfig(t testing.TB, src string, settings config.ServerSettings) *harness {
	t.Helper()
	return newHarnessOpts(t, src, settings, nil)
}

// newHarnessOpts is newHarnessConfig with a hook that edits the gateway
// options (extra stages).
func newHarnessOpts(t testing.TB, src string, settings config.ServerSettings, edit func(*gateway.Options)) *harness {
	t.Helper()
	up, err := testupstream.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"OPENAI_BASE_URL":    up.URL() + "/v1",
		"ANTHROPIC_BASE_URL": up.URL(),
		"MISTRAL_API_BASE":   up.URL() + "/v1",
		"OPENAI_API_KEY":     "sk-test-openai",
		"ANTHROPIC_API_KEY":  "sk-ant-test",
		"MISTRAL_API_KEY":    "mistral-test",
	}
	getenv := func(k string) string { return env[k] }
	cfg, err := config.Parse([]byte(src), "test", getenv)
	if err != nil {
		t.Fatal(err)
	}
	metrics := telemetry.NewMetrics()
	opts := gateway.Options{Getenv: getenv, Metrics: metrics}
	if edit != nil {
		edit(&opts)
	}
	rt, err := gateway.Build(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Holder: gateway.NewHolder(rt), Settings: settings, Metrics: metrics})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, up: up, srv: srv, url: "http://" + ln.Addr().String(), done: make(chan error, 1)}
	go func() { h.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		// Shutdown waits for client connections to close; the test
		// client's idle keep-alive connections are closed first.
		http.DefaultClient.CloseIdleConnections()
		_ = srv.Shutdown()
		_ = up.Close()
	})
	return h
}

func (h *harness) post(path, body string, headers ...string) (*http.Response, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest("POST", h.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func (h *harness) get(path string, headers ...string) (*http.Response, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.url+path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func jsonPath(t testing.TB, b []byte, keys ...any) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("no key %q in %s", k, b)
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("no index %d in %s", k, b)
			}
			v = a[k]
		}
	}
	return v
}

// events splits an SSE body into (name, data) pairs.
func events(b []byte) [][2]string {
	var out [][2]string
	var name string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "event: "):
			name = l[7:]
		case strings.HasPrefix(l, "data: "):
			out = append(out, [2]string{name, l[6:]})
			name = ""
		}
	}
	return out
}

const chatBody = `{"model":"%s","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]%s}`

func chat(model, extra string) string {
	return strings.Replace(strings.Replace(chatBody, "%s", model, 1), "%s", extra, 1)
}

func TestChatAllProvidersNonStream(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	for _, tc := range []struct {
		model, path, auth, authVal string
	}{
		{"gpt-4o", "/v1/chat/completions", "authorization", "Bearer sk-test-openai"},
		{"claude", "/v1/messages", "x-api-key", "sk-ant-test"},
		{"mistral", "/v1/chat/completions", "authorization", "Bearer mistral-test"},
	} {
		h.up.Reset()
		resp, b := h.post("/v1/chat/completions", chat(tc.model, ""))
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d: %s", tc.model, resp.StatusCode, b)
		}
		if got := jsonPath(t, b, "object"); got != "chat.completion" {
			t.Fatalf("%s: object = %v", tc.model, got)
		}
		content, _ := jsonPath(t, b, "choices", 0, "message", "content").(string)
		if !strings.Contains(content, "reply to: hello") {
			t.Fatalf("%s: content %q", tc.model, content)
		}
		if jsonPath(t, b, "usage", "total_tokens").(float64) <= 0 {
			t.Fatalf("%s: no usage: %s", tc.model, b)
		}
		if resp.Header.Get("x-request-id") == "" {
			t.Fatalf("%s: no x-request-id", tc.model)
		}
		r, ok := h.up.Last()
		if !ok || r.Path != tc.path || r.Headers[tc.auth] != tc.authVal {
			t.Fatalf("%s: upstream got %s with %s=%q", tc.model, r.Path, tc.auth, r.Headers[tc.auth])
		}
		if tc.model == "claude" {
			if sys := jsonPath(t, r.Body, "system"); sys == nil {
				t.Fatalf("anthropic body has no top-level system: %s", r.Body)
			}
			if jsonPath(t, r.Body, "max_tokens") == nil || r.Headers["anthropic-version"] == "" {
				t.Fatalf("anthropic body/headers incomplete: %s %v", r.Body, r.Headers)
			}
		} else if m := jsonPath(t, r.Body, "model"); m != strings.TrimPrefix(map[string]string{"gpt-4o": "gpt-4o", "mistral": "mistral-small-latest"}[tc.model], "") {
			t.Fatalf("%s: upstream model %v", tc.model, m)
		}
	}
}

func TestPassThroughKeepsBodyAndRewritesModel(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	body := `{"model":"mistral","messages":[{"role":"user","content":"hi"}],"seed":7,"response_format":{"type":"json_object"},"n":2,"stop":["x"],"logprobs":true,"x_vendor":{"a":[1,2]}}`
	resp, b := h.post("/chat/completions", body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	r, _ := h.up.Last()
	want := strings.Replace(body, `"mistral"`, `"mistral-small-latest"`, 1)
	if string(r.Body) != want {
		t.Fatalf("upstream body\n got %s\nwant %s", r.Body, want)
	}
}

func TestStreamingPassThrough(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", `,"stream":true`))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("content-type"), "text/event-stream") {
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("content-type"), b)
	}
	ev := events(b)
	if len(ev) < 3 || ev[len(ev)-1][1] != "[DONE]" {
		t.Fatalf("events: %q", ev)
	}
	for _, e := range ev {
		if strings.Contains(e[1], `"choices":[]`) {
			t.Fatalf("usage chunk reached a client that did not ask for it: %s", e[1])
		}
	}
	r, _ := h.up.Last()
	if jsonPath(t, r.Body, "stream_options", "include_usage") != true {
		t.Fatalf("gateway did not ask the upstream for usage: %s", r.Body)
	}
	// Asked for: the usage chunk arrives.
	_, b = h.post("/v1/chat/completions", chat("gpt-4o", `,"stream":true,"stream_options":{"include_usage":true}`))
	ev = events(b)
	if !strings.Contains(ev[len(ev)-2][1], `"usage"`) {
		t.Fatalf("no usage chunk before [DONE]: %q", ev)
	}
}

func TestStreamingAnthropicToOpenAIAndBack(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	// OpenAI client, Anthropic provider.
	_, b := h.post("/v1/chat/completions", chat("claude", `,"stream":true`))
	ev := events(b)
	if len(ev) < 3 || ev[len(ev)-1][1] != "[DONE]" {
		t.Fatalf("events: %q", ev)
	}
	var text strings.Builder
	for _, e := range ev[:len(ev)-1] {
		var c struct {
			Object  string
			Choices []struct{ Delta struct{ Content string } }
		}
		if err := json.Unmarshal([]byte(e[1]), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("bad chunk %s", e[1])
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	if !strings.Contains(text.String(), "anthropic reply to: hello") {
		t.Fatalf("assembled %q", text.String())
	}
	// Anthropic client, OpenAI provider.
	_, b = h.post("/v1/messages", `{"model":"gpt-4o","max_tokens":50,"stream":true,"system":"be brief","messages":[{"role":"user","content":"hello"}]}`)
	ev = events(b)
	if len(ev) < 4 || ev[0][0] != "message_start" || ev[len(ev)-1][0] != "message_stop" {
		t.Fatalf("anthropic events: %q", ev)
	}
	r, _ := h.up.Last()
	if jsonPath(t, r.Body, "messages", 0, "role") != "system" {
		t.Fatalf("system prompt not translated: %s", r.Body)
	}
}

func TestLongStreamArrivesChunkByChunk(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	_, b := h.post("/v1/chat/completions", chat("long", `,"stream":true`))
	ev := events(b)
	// role chunk + 2000 content chunks + finish chunk + [DONE]
	if len(ev) != 2003 {
		t.Fatalf("got %d events, want 2003", len(ev))
	}
	// Chunks are relayed as they arrive: with a 10 ms gap upstream, the
	// first byte reaches the client long before the stream ends.
	req, _ := http.NewRequest("POST", h.url+"/v1/chat/completions", strings.NewReader(chat("slow", `,"stream":true`)))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	n := 0
	for {
		l, err := br.ReadString('\n')
		if strings.HasPrefix(l, "data: ") {
			n++
		}
		if err != nil {
			break
		}
	}
	total := time.Since(start)
	if n != 102 || first > total/4 {
		t.Fatalf("events %d, first byte after %v of %v: the stream was buffered", n, first, total)
	}
}

func TestStreamCutMidwayEndsWithErrorEvent(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	_, b := h.post("/v1/chat/completions", chat("openai-cut", `,"stream":true`))
	ev := events(b)
	last := ev[len(ev)-1][1]
	if last == "[DONE]" || !strings.Contains(last, `"error"`) || !strings.Contains(last, "before completion") {
		t.Fatalf("a cut stream must end with an error event, got %q", ev)
	}
	_, b = h.post("/v1/messages", `{"model":"claude-cut","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hello"}]}`)
	ev = events(b)
	if ev[len(ev)-1][0] != "error" {
		t.Fatalf("anthropic: a cut stream must end with event: error, got %q", ev)
	}
	_, b = h.post("/v1/chat/completions", chat("claude-cut", `,"stream":true`))
	ev = events(b)
	if last := ev[len(ev)-1][1]; !strings.Contains(last, `"error"`) {
		t.Fatalf("anthropic->openai: a cut stream must end with an error event, got %q", ev)
	}
}

func TestErrors(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{MaxBodyBytes: 1 << 16})
	cases := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"malformed json", "/v1/chat/completions", `{"model":`, 400, "invalid_json"},
		{"not an object", "/v1/chat/completions", `[1,2]`, 400, "invalid_json"},
		{"empty body", "/v1/chat/completions", ``, 400, "invalid_json"},
		{"missing model", "/v1/chat/completions", `{"messages":[]}`, 400, "missing_model"},
		{"model wrong type", "/v1/chat/completions", `{"model":5,"messages":[]}`, 400, "invalid_request"},
		{"stream wrong type", "/v1/chat/completions", `{"model":"gpt-4o","stream":"yes","messages":[]}`, 400, "invalid_request"},
		{"messages wrong type", "/v1/chat/completions", `{"model":"gpt-4o","messages":"hi"}`, 400, "invalid_request"},
		{"unknown model", "/v1/chat/completions", chat("nope", ""), 404, "model_not_found"},
		{"upstream 429", "/v1/chat/completions", chat("openai-429", ""), 429, "rate_limit_exceeded"},
		{"upstream 401", "/v1/chat/completions", chat("openai-401", ""), 401, "upstream_error"},
		{"upstream 529", "/v1/chat/completions", chat("claude-529", ""), 529, "service_unavailable"},
		{"unknown route", "/v1/nothing", `{}`, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, b := h.post(c.path, c.body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			if got := jsonPath(t, b, "error", "code"); got != c.code {
				t.Fatalf("code %v, want %s: %s", got, c.code, b)
			}
			if typ, _ := jsonPath(t, b, "error", "type").(string); typ == "" {
				t.Fatalf("no error type: %s", b)
			}
			if strings.Contains(string(b), "sk-secret") || strings.Contains(string(b), "sk-ant-secret") {
				t.Fatalf("a provider key leaked: %s", b)
			}
		})
	}
	// Anthropic dialect gets Anthropic's error shape.
	resp, b := h.post("/v1/messages", `{"model":"nope","max_tokens":5,"messages":[]}`)
	if resp.StatusCode != 404 || jsonPath(t, b, "type") != "error" || jsonPath(t, b, "error", "type") != "not_found_error" {
		t.Fatalf("anthropic error shape: %d %s", resp.StatusCode, b)
	}
	resp, _ = h.post("/v1/chat/completions", chat("openai-429", ""))
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("429 without Retry-After")
	}
	// The gateway keeps serving after all of that.
	if resp, b := h.post("/v1/chat/completions", chat("gpt-4o", "")); resp.StatusCode != 200 {
		t.Fatalf("after errors: %d %s", resp.StatusCode, b)
	}
}

// A body over the limit gets 413 in the OpenAI shape. Written on a raw
// connection: the server answers after the headers and closes, so a client
// still sending the body may see a reset instead of the answer.
func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{MaxBodyBytes: 1 << 16})
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{\"model\":"))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || jsonPath(t, b, "error", "code") != "request_too_large" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if r, _ := h.post("/v1/chat/completions", chat("mock", "")); r.StatusCode != 200 {
		t.Fatalf("gateway not serving after a body over the limit: %d", r.StatusCode)
	}
}

func TestMasterKey(t *testing.T) {
	h := newHarness(t, "general_settings:\n  master_key: sk-master-1234\n", config.ServerSettings{})
	if resp, b := h.post("/v1/chat/completions", chat("mock", "")); resp.StatusCode != 401 || jsonPath(t, b, "error", "type") != "authentication_error" {
		t.Fatalf("no key: %d %s", resp.StatusCode, b)
	}
	if resp, _ := h.post("/v1/chat/completions", chat("mock", ""), "Authorization", "Bearer sk-wrong"); resp.StatusCode != 401 {
		t.Fatalf("wrong key: %d", resp.StatusCode)
	}
	for _, hdr := range [][2]string{{"Authorization", "Bearer sk-master-1234"}, {"x-api-key", "sk-master-1234"}, {"api-key", "sk-master-1234"}} {
		if resp, b := h.post("/v1/chat/completions", chat("mock", ""), hdr[0], hdr[1]); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", hdr[0], resp.StatusCode, b)
		}
	}
	if resp, _ := h.get("/v1/models"); resp.StatusCode != 401 {
		t.Fatalf("/v1/models without key: %d", resp.StatusCode)
	}
	if resp, _ := h.get("/health/liveliness"); resp.StatusCode != 200 {
		t.Fatalf("liveliness needs no key: %d", resp.StatusCode)
	}
	// The master key never reaches a provider.
	h.post("/v1/chat/completions", chat("gpt-4o", ""), "Authorization", "Bearer sk-master-1234")
	for _, r := range h.up.Requests() {
		for _, v := range r.Headers {
			if strings.Contains(v, "sk-master-1234") {
				t.Fatalf("master key forwarded upstream: %v", r.Headers)
			}
		}
	}
}

func TestModelsAndHealth(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	resp, b := h.get("/v1/models")
	if resp.StatusCode != 200 || jsonPath(t, b, "object") != "list" || jsonPath(t, b, "data", 0, "id") != "gpt-4o" {
		t.Fatalf("models: %d %s", resp.StatusCode, b)
	}
	if resp, b := h.get("/models/claude"); resp.StatusCode != 200 || jsonPath(t, b, "id") != "claude" {
		t.Fatalf("model: %d %s", resp.StatusCode, b)
	}
	if resp, b := h.get("/v1/models/nope"); resp.StatusCode != 404 || jsonPath(t, b, "error", "code") != "model_not_found" {
		t.Fatalf("unknown model: %d %s", resp.StatusCode, b)
	}
	if resp, b := h.get("/health/readiness"); resp.StatusCode != 200 || jsonPath(t, b, "status") != "healthy" {
		t.Fatalf("readiness: %d %s", resp.StatusCode, b)
	}
	h.post("/v1/chat/completions", chat("mock", ""))
	if resp, b := h.get("/metrics"); resp.StatusCode != 200 || !strings.Contains(string(b), `portcullis_requests_total{endpoint="chat",model="mock",status="200"} 1`) {
		t.Fatalf("metrics: %d %s", resp.StatusCode, b)
	}
	if resp, _ := h.get("/v1/chat/completions"); resp.StatusCode != 405 {
		t.Fatalf("GET on chat: %d", resp.StatusCode)
	}
}

func TestRequestIDEchoed(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	resp, _ := h.post("/v1/chat/completions", chat("mock", ""), "x-request-id", "my-trace-42")
	if resp.Header.Get("x-request-id") != "my-trace-42" {
		t.Fatalf("x-request-id = %q", resp.Header.Get("x-request-id"))
	}
	resp, _ = h.post("/v1/chat/completions", chat("mock", ""), "x-request-id", "bad id with spaces")
	if got := resp.Header.Get("x-request-id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("unsafe id echoed: %q", got)
	}
}

func TestEmbeddingsAndCompletions(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	resp, b := h.post("/v1/embeddings", `{"model":"mock-embed","input":["a","b"]}`)
	if resp.StatusCode != 200 || len(jsonPath(t, b, "data").([]any)) != 2 {
		t.Fatalf("mock embeddings: %d %s", resp.StatusCode, b)
	}
	resp, b = h.post("/embeddings", `{"model":"openai-embed","input":"a"}`)
	if resp.StatusCode != 200 || jsonPath(t, b, "object") != "list" {
		t.Fatalf("openai embeddings: %d %s", resp.StatusCode, b)
	}
	if r, _ := h.up.Last(); r.Path != "/v1/embeddings" {
		t.Fatalf("upstream path %s", r.Path)
	}
	resp, b = h.post("/v1/embeddings", `{"model":"claude","input":"a"}`)
	if resp.StatusCode != 400 || jsonPath(t, b, "error", "code") != "unsupported" {
		t.Fatalf("embeddings on anthropic: %d %s", resp.StatusCode, b)
	}
	resp, b = h.post("/v1/completions", `{"model":"gpt-4o","prompt":"once upon"}`)
	if resp.StatusCode != 200 || jsonPath(t, b, "object") != "text_completion" {
		t.Fatalf("completions: %d %s", resp.StatusCode, b)
	}
	resp, b = h.post("/v1/completions", `{"model":"claude","prompt":"once upon","max_tokens":20}`)
	if resp.StatusCode != 200 || jsonPath(t, b, "object") != "text_completion" ||
		!strings.Contains(jsonPath(t, b, "choices", 0, "text").(string), "once upon") {
		t.Fatalf("completions via anthropic chat: %d %s", resp.StatusCode, b)
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := chat("slow", `,"stream":true`)
	_, _ = conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	br := bufio.NewReader(conn)
	for i := 0; i < 12; i++ { // headers and a few events
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	// The gateway notices on its next write and closes the upstream; it
	// keeps serving others meanwhile.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, b := h.post("/v1/chat/completions", chat("mock", ""))
		if resp.StatusCode != 200 {
			t.Fatalf("after disconnect: %d %s", resp.StatusCode, b)
		}
		rt := h.srv.holder.Current()
		g, _ := rt.Router.Group("slow")
		if g.Deployments[0].InFlight() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream stream of a gone client is still open")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSlowClientIsCutOff(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{ReadTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers promise a body that never comes.
	_, _ = conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo"))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(conn)
	if !bytes.Contains(b, []byte("408")) && len(b) != 0 {
		t.Fatalf("slow client got %q", b)
	}
	if resp, _ := h.post("/v1/chat/completions", chat("mock", "")); resp.StatusCode != 200 {
		t.Fatalf("gateway not serving after a slow client")
	}
}

func TestGracefulShutdownLetsStreamsFinish(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{ShutdownTimeout: 10 * time.Second})
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Post(h.url+"/v1/chat/completions", "application/json", strings.NewReader(chat("slow", `,"stream":true`)))
		if err != nil {
			res <- result{0, err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{len(events(b)), err}
	}()
	time.Sleep(300 * time.Millisecond) // the stream is under way
	start := time.Now()
	if err := h.srv.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	r := <-res
	if r.err != nil || r.n != 103 {
		t.Fatalf("in-flight stream: %d events, err %v (want 103, nil)", r.n, r.err)
	}
	if time.Since(start) > 9*time.Second {
		t.Fatalf("shutdown took %v", time.Since(start))
	}
	if _, err := http.Post(h.url+"/v1/chat/completions", "application/json", strings.NewReader(chat("mock", ""))); err == nil {
		t.Fatalf("a new request was accepted after shutdown")
	}
}

// A client that stops reading a stream is cut off after the write
// timeout: the gateway does not block on it forever, and when the client
// reads again the stream has been cut (no terminal event).
func TestStalledStreamReaderIsCutOff(t *testing.T) {
	h := newHarness(t, `
  - model_name: endless
    litellm_params:
      model: openai/gpt-4o-chunks-300000
      api_key: sk-test
`, config.ServerSettings{WriteTimeout: 300 * time.Millisecond})
	// A reader that keeps up gets a stream three times longer than the
	// write timeout (102 chunks 10 ms apart): the deadline moves with it.
	_, b := h.post("/v1/chat/completions", chat("slow", `,"stream":true`))
	if ev := events(b); len(ev) != 103 || ev[len(ev)-1][1] != "[DONE]" {
		t.Fatalf("a healthy stream longer than the write timeout was cut: %d events", len(ev))
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		// Small enough to fill quickly, above loopback's 64 KiB MSS (a
		// window under one segment makes the sender trickle after a stall).
		_ = tc.SetReadBuffer(256 << 10)
	}
	body := chat("endless", `,"stream":true`)
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Stop reading: once the socket buffers are full the gateway's writes
	// block, and the write timeout must end the stream. How long filling
	// them takes depends on the machine's load (the race detector, a busy
	// CI host): the stall lasts until the gateway has let the stream go,
	// 20 s at most.
	for end := time.Now().Add(20 * time.Second); h.srv.open.Load() != 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.srv.open.Load(); n != 0 {
		t.Fatalf("the client stopped reading 20 s ago and %d stream is still open: a stalled reader was not cut off", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	rest, err := io.ReadAll(resp.Body)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("after the stall the stream went on for 20 s (%d bytes): a stalled reader was not cut off", len(rest))
	}
	if strings.Contains(string(rest), "[DONE]") {
		t.Fatal("the whole stream arrived: a stalled reader was not cut off")
	}
}

// The fixed header names set with SetCanonical are in the form the server's
// normalization gives: a later Set of the same name replaces the header
// instead of adding a second one.
func TestFixedHeaderNamesAreCanonical(t *testing.T) {
	for _, n := range [][]byte{hdrRequestID, hdrPortcullisRequestID, hdrModelID, hdrAttemptedFallbacks, hdrAttemptedRetries,
		hdrCacheControl, hdrAccelBuffering} {
		if got := fasthttp.AppendNormalizedHeaderKey(nil, strings.ToLower(string(n))); string(got) != string(n) {
			t.Errorf("%s: normalized %s", n, got)
		}
		var h fasthttp.ResponseHeader
		setHeader(&h, n, "a")
		h.Set(strings.ToLower(string(n)), "b")
		if v := h.PeekAll(string(n)); len(v) != 1 || string(v[0]) != "b" {
			t.Errorf("%s: %q after setHeader then Set", n, v)
		}
	}
}
