package plugins_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/route"
	"github.com/portcullis/portcullis/engine/server"
	"github.com/portcullis/portcullis/engine/telemetry"
	"github.com/portcullis/portcullis/engine/testupstream"
	"github.com/portcullis/portcullis/engine/wasm"
)

// gatewayWith serves a config with plugins, wired as the gateway wires
// them (gateway.Options.Plugins), in front of the fake upstream.
func gatewayWith(t *testing.T, plugins string) (url string, up *testupstream.Server) {
	t.Helper()
	up, err := testupstream.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	src := `
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o-split-3, api_key: sk-test, api_base: ` + up.URL() + `/v1}
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini-split-5, api_key: sk-test, api_base: ` + up.URL() + `/v1}
  - model_name: claude
    litellm_params: {model: anthropic/claude-split-4, api_key: sk-ant-test, api_base: ` + up.URL() + `}
portcullis:
  plugins:
` + plugins
	cfg, err := config.Parse([]byte(src), "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	metrics := telemetry.NewMetrics()
	wm := wasm.NewMetrics(metrics.Registry)
	opts := gateway.Options{Metrics: metrics, Plugins: func(cfg *config.Config, r *route.Router) (pipeline.Middleware, func(), error) {
		s, err := wasm.Build(cfg.Plugins, wasm.Options{Log: zap.NewNop(), Router: r, CacheDir: cacheDir, Metrics: wm, Source: cfg.Source})
		if err != nil {
			return nil, nil, err
		}
		return s.Middleware(), s.Close, nil
	}}
	rt, err := gateway.Build(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	holder := gateway.NewHolder(rt)
	srv := server.New(server.Options{Holder: holder, Metrics: metrics})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		_ = srv.Shutdown()
		holder.Close()
		_ = up.Close()
	})
	return "http://" + ln.Addr().String(), up
}

func post(t *testing.T, url, body string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

// streamedText joins the text of an SSE body (OpenAI chunks or
// Anthropic deltas) and checks that every event's data is JSON or [DONE].
func streamedText(t *testing.T, b []byte) string {
	var sb strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || l == "[DONE]" {
			continue
		}
		if !gjson.Valid(l) {
			t.Fatalf("event data is not JSON: %q", l)
		}
		sb.WriteString(gjson.Get(l, "choices.0.delta.content").Str)
		sb.WriteString(gjson.Get(l, "delta.text").Str)
	}
	return sb.String()
}

func TestGatewayEndToEnd(t *testing.T) {
	pii, router := module(t, "pii-redact"), module(t, "router-go")
	url, up := gatewayWith(t, fmt.Sprintf(`
    - name: router
      module: %s
      failure_policy: fail_open
      memory_limit_pages: 128
      config: {rules: [{header: x-tier, equals: batch, model: gpt-4o-mini}], fallbacks: [gpt-4o]}
    - name: pii
      module: %s
      hooks: [on_response, on_stream_event, on_stream_end]
      trusted: true
`, router, pii))
	const secret = "mail bob.smith@example.com or call +1 555 867 5309 today"
	msg := func(model string, stream bool, extra string) string {
		return fmt.Sprintf(`{"model":%q,"stream":%v,"max_tokens":50,"messages":[{"role":"user","content":%q}]%s}`, model, stream, secret, extra)
	}
	check := func(name, text string) {
		t.Helper()
		if strings.Contains(text, "bob.smith") || strings.Contains(text, "867") || !strings.Contains(text, "[EMAIL]") || !strings.Contains(text, "[PHONE]") {
			t.Errorf("%s: %q", name, text)
		}
		if !strings.Contains(text, "reply to: mail [EMAIL] or call [PHONE] today") {
			t.Errorf("%s: text lost or reordered: %q", name, text)
		}
	}
	// OpenAI stream, the reply split in 3-byte chunks.
	resp, b := post(t, url+"/v1/chat/completions", msg("gpt-4o", true, ""))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	check("openai stream", streamedText(t, b))
	// Anthropic client and upstream, 4-byte deltas.
	resp, b = post(t, url+"/v1/messages", msg("claude", true, ""), "anthropic-version", "2023-06-01")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	check("anthropic stream", streamedText(t, b))
	// Anthropic client, OpenAI upstream: the plugin sees translated events.
	resp, b = post(t, url+"/v1/messages", msg("gpt-4o", true, ""), "anthropic-version", "2023-06-01")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	check("anthropic from openai", streamedText(t, b))
	// Not streamed.
	resp, b = post(t, url+"/v1/chat/completions", msg("gpt-4o", false, ""))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	check("openai body", gjson.GetBytes(b, "choices.0.message.content").Str)
	// The router moves batch-tier requests to gpt-4o-mini.
	resp, b = post(t, url+"/v1/chat/completions", msg("gpt-4o", false, ""), "x-tier", "batch")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	reqs := up.Requests()
	last := reqs[len(reqs)-1]
	if m := gjson.GetBytes(last.Body, "model").Str; m != "gpt-4o-mini-split-5" {
		t.Errorf("routed to %q", m)
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		t.Errorf("body %s", b)
	}
}
