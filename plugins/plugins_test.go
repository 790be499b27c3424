// Package plugins_test builds the first-party plugins and runs their
// golden tests, stream tests and benchmarks in the gateway's real Wasm
// host (engine/wasm).
package plugins_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/pricing"
	"github.com/portcullis/portcullis/engine/route"
	"github.com/portcullis/portcullis/engine/wasm"
)

// modules are the built plugins, by name; skip says why one is missing.
var (
	modules = map[string]string{}
	skip    = map[string]string{}
	failed  = map[string]string{}
	// cacheDir is the compilation cache shared by the tests' stages (the
	// Go module compiles in seconds without it).
	cacheDir string
)

// builds are the first-party plugins: each is built by its build.sh,
// which writes out (or, for the Rust and AssemblyScript plugins, its own
// directory's <name>.wasm).
var builds = []struct {
	name   string
	ownOut bool // build.sh writes <dir>/<name>.wasm and takes no argument
}{
	{"pii-redact", false}, {"router-go", false}, {"router-rust", true}, {"prompt-guard", true},
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portcullis-plugins")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheDir = filepath.Join(dir, "cache")
	for _, b := range builds {
		out := filepath.Join(dir, b.name+".wasm")
		if why := missingToolchain(b.name); why != "" {
			skip[b.name] = why
			continue
		}
		args := []string{filepath.Join(b.name, "build.sh"), out}
		if b.ownOut {
			args, out = args[:1], filepath.Join(b.name, b.name+".wasm")
		}
		if out, err := exec.Command("sh", args...).CombinedOutput(); err != nil {
			failed[b.name] = fmt.Sprintf("%s/build.sh: %v\n%s", b.name, err, out)
			continue
		}
		modules[b.name] = out
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// missingToolchain reports a toolchain that is not installed at all (the
// Makefile installs them: make toolchains). A build that fails with the
// toolchain present is a test failure, not a skip.
func missingToolchain(name string) string {
	if _, err := os.Stat(filepath.Join(name, "build.sh")); err != nil {
		return "no " + name + "/build.sh"
	}
	switch name {
	case "pii-redact":
		if _, err := exec.LookPath("clang"); err != nil {
			return "clang is not installed (apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)"
		}
		if _, err := exec.LookPath("wasm-ld"); err != nil {
			return "wasm-ld is not installed (apt-get install lld)"
		}
		if os.Getenv("WASI_SYSROOT") != "" {
			return ""
		}
		// Debian's wasi-libc, or a wasi-sdk style sysroot.
		for _, f := range []string{"/usr/include/wasm32-wasi/stdlib.h", "/usr/share/wasi-sysroot/include/stdlib.h"} {
			if _, err := os.Stat(f); err == nil {
				return ""
			}
		}
		return "wasi-libc is not installed (apt-get install wasi-libc libclang-rt-dev-wasm32, or set WASI_SYSROOT)"
	case "router-rust":
		rustc := os.Getenv("RUSTC")
		if rustc == "" {
			rustc = "/usr/bin/rustc"
		}
		if _, err := os.Stat(rustc); err != nil {
			return "Debian's rustc is not installed (apt-get install rustc libstd-rust-dev-wasm32 lld)"
		}
		if m, _ := filepath.Glob("/usr/lib/rustlib/wasm32-unknown-unknown*"); len(m) == 0 && os.Getenv("RUSTC") == "" {
			return "the Rust wasm32 standard library is not installed (apt-get install libstd-rust-dev-wasm32)"
		}
	case "prompt-guard":
		if _, err := os.Stat("../sdk/assemblyscript/node_modules/.bin/asc"); err != nil {
			return "the AssemblyScript compiler is not installed (make toolchains: npm ci in sdk/assemblyscript)"
		}
	}
	return ""
}

func module(t testing.TB, name string) string {
	t.Helper()
	if msg, ok := failed[name]; ok {
		t.Fatal(msg)
	}
	if why, ok := skip[name]; ok {
		if os.Getenv("PORTCULLIS_REQUIRE_TOOLCHAINS") != "" {
			// make test installs every toolchain first: missing is a failure.
			t.Fatalf("%s not built: %s", name, why)
		}
		t.Skipf("%s not built: %s", name, why)
	}
	return modules[name]
}

func testRouter() *route.Router {
	deps := []*route.Deployment{
		{ID: "a1", ModelName: "gpt-4o", Price: pricing.Price{Input: 2.5e-6, Output: 10e-6, MaxOutputTokens: 16384}},
		{ID: "b1", ModelName: "gpt-4o-mini", Price: pricing.Price{Input: 0.15e-6, Output: 0.6e-6, MaxOutputTokens: 16384}},
		{ID: "c1", ModelName: "cheap"},
	}
	return route.New(deps, route.Settings{}, zap.NewNop(), nil)
}

func stage(t testing.TB, ps config.PluginSettings, router *route.Router) *wasm.Stage {
	t.Helper()
	if ps.Timeout == 0 {
		ps.Timeout = 2 * time.Second // generous: the test machine is shared
	}
	if ps.FailurePolicy == "" {
		ps.FailurePolicy = "fail_closed"
	}
	s, err := wasm.Build([]config.PluginSettings{ps}, wasm.Options{Log: zap.NewNop(), Router: router, CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// goldenCase is one file of testdata: a hook's input envelope, the
// plugin's config and the result it must return (null: continue, 0).
type goldenCase struct {
	Description string          `json:"description"`
	Hook        string          `json:"hook"`
	Config      json.RawMessage `json:"config"`
	Input       json.RawMessage `json:"input"`
	Expect      json.RawMessage `json:"expect"`
}

// runGolden runs a plugin's golden cases (files in dirs) in the real
// host. on_config cases run on a plugin loaded without config, and the
// result's "hooks" (an SDK detail) is not compared.
func runGolden(t *testing.T, plugin string, defaultConfig json.RawMessage, dirs ...string) {
	mod := module(t, plugin)
	var files []string
	for _, d := range dirs {
		f, _ := filepath.Glob(filepath.Join(d, "*.json"))
		files = append(files, f...)
	}
	if len(files) == 0 {
		t.Fatal("no golden cases")
	}
	stages := map[string]*wasm.Stage{}
	parent := t
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var c goldenCase
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			hook, ok := wasm.ParseHook(c.Hook)
			if !ok {
				t.Fatalf("hook %q", c.Hook)
			}
			cfg := c.Config
			if cfg == nil {
				cfg = defaultConfig
			}
			if hook == wasm.HookConfig {
				cfg = json.RawMessage("null")
			}
			s := stages[string(cfg)]
			if s == nil {
				s = stage(parent, config.PluginSettings{Name: plugin, Module: mod, Config: cfg, PoolSize: 1}, nil)
				stages[string(cfg)] = s
			}
			raw, _, err := s.Plugins()[0].Call(hook, c.Input)
			if err != nil && wasm.ReasonOf(err) != wasm.ReasonPluginError {
				t.Fatal(err)
			}
			if hook == wasm.HookConfig {
				raw = withoutHooks(raw)
				// on_config changed the pooled instance's config: do not
				// reuse it.
				s.Close()
				delete(stages, string(cfg))
			}
			if raw == nil {
				raw = []byte("null")
			}
			if !jsonEqual(raw, c.Expect) {
				t.Errorf("%s\nresult:\n got  %s\n want %s", c.Description, raw, compact(c.Expect))
			}
		})
	}
}

// withoutHooks drops an on_config result's "hooks"; nil when nothing
// else is left.
func withoutHooks(raw []byte) []byte {
	if raw == nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	delete(m, "hooks")
	if len(m) == 0 || (len(m) == 1 && m["action"] == "continue") {
		return nil
	}
	b, _ := json.Marshal(m)
	return b
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

// routerConfig is the rule set shared by router-go and router-rust.
var routerConfig = json.RawMessage(`{"rules":[{"header":"x-tier","equals":"premium","model":"gpt-4o"},{"tag":"batch","model":"gpt-4o-mini"},{"max_prompt_chars":200,"model":"gpt-4o-mini"},{"min_prompt_chars":2000,"model":"gpt-4o"},{"max_estimated_cost_usd": 0.001, "model": "cheap"}], "fallbacks":["gpt-4o"]}`)

func TestPIIRedactGolden(t *testing.T) { runGolden(t, "pii-redact", nil, "pii-redact/testdata") }

// The routers share router-testdata: router-go and router-rust must
// decide alike.
func TestRouterGoGolden(t *testing.T) {
	runGolden(t, "router-go", routerConfig, "router-go/testdata", "router-testdata")
}

func TestRouterRustGolden(t *testing.T) {
	runGolden(t, "router-rust", routerConfig, "router-go/testdata", "router-testdata")
}

func TestPromptGuardGolden(t *testing.T) { runGolden(t, "prompt-guard", nil, "prompt-guard/testdata") }

func exchange(d llm.Dialect, body string, header map[string]string) *pipeline.Exchange {
	var h fasthttp.RequestHeader
	h.Set("Authorization", "Bearer sk-secret")
	for k, v := range header {
		h.Set(k, v)
	}
	return &pipeline.Exchange{ID: "gw-1", Dialect: d, Body: []byte(body), Model: "gpt-4o", Header: &h, KeyAlias: "ci"}
}

// TestRouterGoInGateway runs the router as the stage runs it: on_config
// narrows its hooks to on_request, its route lands on the exchange.
func TestRouterGoInGateway(t *testing.T) {
	s := stage(t, config.PluginSettings{Name: "router", Module: module(t, "router-go"), Config: routerConfig}, testRouter())
	if got := strings.Join(s.Plugins()[0].Hooks(), ","); got != "on_request" {
		t.Fatalf("hooks = %s, want on_request (narrowed by on_config)", got)
	}
	x := exchange(llm.OpenAIChat, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, map[string]string{"X-Tier": "premium"})
	if err := s.Serve(x, func(*pipeline.Exchange) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if x.RouteModel != "gpt-4o" || strings.Join(x.RequestFallbacks, ",") != "gpt-4o" || len(x.Filters()) != 0 {
		t.Fatalf("route %q fallbacks %v filters %d", x.RouteModel, x.RequestFallbacks, len(x.Filters()))
	}
	// A config error refuses the plugin.
	_, err := wasm.Build([]config.PluginSettings{{Name: "router", Module: module(t, "router-go"), Config: []byte(`{"rules":[{"tag":"x"}]}`),
		FailurePolicy: "fail_closed"}}, wasm.Options{CacheDir: cacheDir})
	if err == nil || !strings.Contains(err.Error(), "model: required") {
		t.Fatalf("bad config: %v", err)
	}
}

// TestPIIRequestInGateway checks the patched request body.
func TestPIIRequestInGateway(t *testing.T) {
	s := stage(t, config.PluginSettings{Name: "pii", Module: module(t, "pii-redact")}, testRouter())
	x := exchange(llm.OpenAIChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"mail me: a.b@example.org, card 4111-1111-1111-1111"},`+
		`{"role":"user","content":[{"type":"text","text":"call (555) 123-4567"},{"type":"image_url","image_url":{"url":"x"}}]}]}`, nil)
	if err := s.Serve(x, func(*pipeline.Exchange) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := `{"model":"gpt-4o","messages":[{"role":"user","content":"mail me: [EMAIL], card [CARD]"},` +
		`{"role":"user","content":[{"type":"text","text":"call [PHONE]"},{"type":"image_url","image_url":{"url":"x"}}]}]}`
	if !jsonEqual(x.Body, []byte(want)) {
		t.Errorf("body:\n got  %s\n want %s", x.Body, want)
	}
	sort.Strings(x.Labels)
	if got := strings.Join(x.Labels, ","); got != "pii:card,pii:email,pii:phone,redacted:card,redacted:email,redacted:phone" {
		t.Errorf("labels = %s", got)
	}
}

// streamText runs events through the plugin's stream filter and returns
// the text the client would see, the events emitted and the labels.
func streamText(t *testing.T, s *wasm.Stage, d llm.Dialect, events [][2]string) (string, []string, *pipeline.Exchange) {
	t.Helper()
	x := exchange(d, `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`, nil)
	x.Stream = true
	if err := s.Serve(x, func(*pipeline.Exchange) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fs := x.Filters()
	if len(fs) != 1 {
		t.Fatalf("%d filters", len(fs))
	}
	var text strings.Builder
	var out []string
	emit := func(name, data []byte) error {
		out = append(out, string(name)+"|"+string(data))
		if string(data) == "[DONE]" {
			return nil
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content *string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Delta struct {
				Text *string `json:"text"`
			} `json:"delta"`
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatalf("emitted invalid JSON %q: %v", data, err)
		}
		if len(ev.Choices) > 0 && ev.Choices[0].Delta.Content != nil {
			text.WriteString(*ev.Choices[0].Delta.Content)
		}
		if ev.Delta.Text != nil {
			text.WriteString(*ev.Delta.Text)
		}
		return nil
	}
	for _, e := range events {
		var name []byte
		if e[0] != "" {
			name = []byte(e[0])
		}
		if err := fs[0].Event(x, name, []byte(e[1]), emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs[0].End(x, true, emit); err != nil {
		t.Fatal(err)
	}
	return text.String(), out, x
}

func chunk(content string) [2]string {
	b, _ := json.Marshal(content)
	return [2]string{"", `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":` + string(b) + `},"finish_reason":null}]}`}
}

func TestPIIStreamOpenAI(t *testing.T) {
	s := stage(t, config.PluginSettings{Name: "pii", Module: module(t, "pii-redact")}, testRouter())
	for _, c := range []struct {
		name   string
		pieces []string
		want   string
	}{
		{"email over two chunks", []string{"Contact me at john.d", "oe@example.com please"}, "Contact me at [EMAIL] please"},
		{"email over three chunks", []string{"x jo", "hn@exa", "mple.co", "m."}, "x [EMAIL]."},
		{"phone over chunks", []string{"call +1 555 ", "123 4567", " now"}, "call [PHONE] now"},
		{"card over chunks ending in spaces", []string{"card 4111 ", "1111 1111 ", "1111 thanks"}, "card [CARD] thanks"},
		{"not a card (Luhn)", []string{"id 4111 1111 1111 1112 ok"}, "id 4111 1111 1111 1112 ok"},
		{"held to the end", []string{"write to ", "a@b.io"}, "write to [EMAIL]"},
		{"plain", []string{"Hello, ", "world! ", "How are you?"}, "Hello, world! How are you?"},
	} {
		t.Run(c.name, func(t *testing.T) {
			events := [][2]string{{"", `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`}}
			for _, p := range c.pieces {
				events = append(events, chunk(p))
			}
			events = append(events, [2]string{"", `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`},
				[2]string{"", "[DONE]"})
			got, out, _ := streamText(t, s, llm.OpenAIChat, events)
			if got != c.want {
				t.Errorf("text %q, want %q\nevents:\n%s", got, c.want, strings.Join(out, "\n"))
			}
			if last := out[len(out)-1]; last != "|[DONE]" {
				t.Errorf("last event %q", last)
			}
		})
	}
	// Without a finish chunk, held text is flushed before [DONE].
	got, out, x := streamText(t, s, llm.OpenAIChat, [][2]string{chunk("mail bob@"), chunk("example.com"), {"", "[DONE]"}})
	if got != "mail [EMAIL]" || out[len(out)-1] != "|[DONE]" {
		t.Errorf("flush before [DONE]: %q %v", got, out)
	}
	if !strings.Contains(strings.Join(x.Labels, ","), "redacted:email") {
		t.Errorf("labels %v", x.Labels)
	}
}

// choiceChunk is an OpenAI chunk carrying text for the given choices
// (index -> text), in index order.
func choiceChunk(texts ...string) [2]string {
	var b strings.Builder
	b.WriteString(`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[`)
	first := true
	for i, t := range texts {
		if t == "" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		j, _ := json.Marshal(t)
		fmt.Fprintf(&b, `{"index":%d,"delta":{"content":%s},"finish_reason":null}`, i, j)
	}
	b.WriteString(`]}`)
	return [2]string{"", b.String()}
}

// textByChoice joins each choice's delta text over the emitted events.
func textByChoice(t *testing.T, out []string) map[int]string {
	t.Helper()
	got := map[int]string{}
	for _, o := range out {
		data := o[strings.IndexByte(o, '|')+1:]
		if data == "[DONE]" {
			continue
		}
		var ev struct {
			Choices []struct {
				Index int `json:"index"`
				Delta struct {
					Content *string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("emitted invalid JSON %q: %v", data, err)
		}
		for _, c := range ev.Choices {
			if c.Delta.Content != nil {
				got[c.Index] += *c.Delta.Content
			}
		}
	}
	return got
}

// Streams with n > 1: each choice's text is held and redacted on its own.
func TestPIIStreamOpenAIChoices(t *testing.T) {
	s := stage(t, config.PluginSettings{Name: "pii", Module: module(t, "pii-redact")}, testRouter())
	// Interleaved chunks of one choice each, addresses split across
	// chunks; choice 0 finishes with a finish chunk, choice 1 is flushed
	// before [DONE].
	_, out, x := streamText(t, s, llm.OpenAIChat, [][2]string{
		choiceChunk("mail john.d"), choiceChunk("", "call +1 555 "), choiceChunk("oe@example.com now"),
		choiceChunk("", "123 4567 or ann@exa"), choiceChunk("", "mple.org"),
		{"", `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`},
		{"", "[DONE]"},
	})
	got := textByChoice(t, out)
	if got[0] != "mail [EMAIL] now" || got[1] != "call [PHONE] or [EMAIL]" {
		t.Errorf("texts %v\nevents:\n%s", got, strings.Join(out, "\n"))
	}
	if out[len(out)-1] != "|[DONE]" {
		t.Errorf("last event %q", out[len(out)-1])
	}
	if l := strings.Join(x.Labels, ","); !strings.Contains(l, "redacted:email") || !strings.Contains(l, "redacted:phone") {
		t.Errorf("labels %v", x.Labels)
	}
	// Both choices in one chunk: each is patched at its own position.
	_, out, _ = streamText(t, s, llm.OpenAIChat, [][2]string{
		choiceChunk("a bob@", "b eve@"), choiceChunk("example.com", "example.net"), {"", "[DONE]"},
	})
	if got := textByChoice(t, out); got[0] != "a [EMAIL]" || got[1] != "b [EMAIL]" {
		t.Errorf("two choices per chunk: %v\nevents:\n%s", got, strings.Join(out, "\n"))
	}
	// Many choices, each holding a word back: the state stays within its
	// size limit (text no longer held when full), and nothing is lost.
	var first, second []string
	want := map[int]string{}
	for i := 0; i < 64; i++ {
		w := fmt.Sprintf("word%03d", i)
		first = append(first, "x "+strings.Repeat(w, 8))
		second = append(second, " done")
		want[i] = "x " + strings.Repeat(w, 8) + " done"
	}
	_, out, _ = streamText(t, s, llm.OpenAIChat, [][2]string{choiceChunk(first...), choiceChunk(second...), {"", "[DONE]"}})
	got = textByChoice(t, out)
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("choice %d: %q, want %q", i, got[i], w)
		}
	}
}

func TestPIIStreamAnthropic(t *testing.T) {
	s := stage(t, config.PluginSettings{Name: "pii", Module: module(t, "pii-redact")}, testRouter())
	delta := func(text string) [2]string {
		b, _ := json.Marshal(text)
		return [2]string{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":` + string(b) + `}}`}
	}
	events := [][2]string{
		{"message_start", `{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":1,"output_tokens":0}}}`},
		{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
		delta("Reach me at ann.l"), delta("ee@corp.example or 555-"), delta("867-5309 or at ann@"), delta("x.org"),
		{"content_block_stop", `{"type":"content_block_stop","index":0}`},
		{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}`},
		{"message_stop", `{"type":"message_stop"}`},
	}
	got, out, _ := streamText(t, s, llm.AnthropicMessages, events)
	if want := "Reach me at [EMAIL] or [PHONE] or at [EMAIL]"; got != want {
		t.Errorf("text %q, want %q\n%s", got, want, strings.Join(out, "\n"))
	}
	// The flushed delta comes before content_block_stop.
	var stop, lastDelta int
	for i, e := range out {
		if strings.HasPrefix(e, "content_block_stop|") {
			stop = i
		}
		if strings.HasPrefix(e, "content_block_delta|") {
			lastDelta = i
		}
	}
	if lastDelta > stop {
		t.Errorf("a delta after content_block_stop:\n%s", strings.Join(out, "\n"))
	}
}

func TestPIIResponse(t *testing.T) {
	s := stage(t, config.PluginSettings{Name: "pii", Module: module(t, "pii-redact")}, testRouter())
	x := exchange(llm.OpenAIChat, chatBody1K, nil)
	if err := s.Serve(x, func(*pipeline.Exchange) error { return nil }); err != nil {
		t.Fatal(err)
	}
	body, err := x.Filters()[0].Body(x, []byte(`{"id":"r","choices":[{"index":0,"message":{"role":"assistant","content":"Sure: jane@doe.com"},"finish_reason":"stop"}]}`))
	if err != nil || !jsonEqual(body, []byte(`{"id":"r","choices":[{"index":0,"message":{"role":"assistant","content":"Sure: [EMAIL]"},"finish_reason":"stop"}]}`)) {
		t.Fatalf("body %s, err %v", body, err)
	}
}

// TestPIIFailClosed: a plugin that fails mid-stream ends the stream with
// an error under fail_closed.
func TestPIIConfig(t *testing.T) {
	s := stage(t, config.PluginSettings{Name: "pii", Module: module(t, "pii-redact"), Config: []byte(`{"kinds":["email"]}`)}, testRouter())
	x := exchange(llm.OpenAIChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"a@b.io 555-123-4567"}]}`, nil)
	if err := s.Serve(x, func(*pipeline.Exchange) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(x.Body), `"[EMAIL] 555-123-4567"`) {
		t.Fatalf("body %s", x.Body)
	}
	_, err := wasm.Build([]config.PluginSettings{{Name: "pii", Module: module(t, "pii-redact"), Config: []byte(`{"kinds":["ssn"]}`),
		FailurePolicy: "fail_closed"}}, wasm.Options{CacheDir: cacheDir})
	if err == nil || errs.CodeOf(err) != "" && !strings.Contains(err.Error(), "unknown kind") {
		t.Fatalf("bad config: %v", err)
	}
}

// chatBody1K is a chat request of about 1 KiB without PII.
var chatBody1K = func() string {
	msg := strings.Repeat("Please summarise the quarterly report and list the three main risks. ", 12)
	return `{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` + msg + `"}],"max_tokens":200}`
}()

// benchServe measures one Serve (one on_request hook: envelope, call,
// result) and reports the median.
func benchServe(b *testing.B, s *wasm.Stage, body string, header map[string]string) {
	x := exchange(llm.OpenAIChat, body, header)
	next := func(*pipeline.Exchange) error { return nil }
	d := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x.Body, x.Labels, x.RouteModel, x.RequestFallbacks = []byte(body), x.Labels[:0], "", nil
		t0 := time.Now()
		if err := s.Serve(x, next); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(t0))
	}
	b.StopTimer()
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

func BenchmarkPIIRequest(b *testing.B) {
	for _, trusted := range []bool{false, true} {
		b.Run(fmt.Sprintf("trusted=%v", trusted), func(b *testing.B) {
			s := stage(b, config.PluginSettings{Name: "pii", Module: module(b, "pii-redact"), Hooks: []string{"on_request"}, Trusted: trusted}, testRouter())
			benchServe(b, s, chatBody1K, nil)
		})
	}
}

func BenchmarkRouterGoRequest(b *testing.B) {
	for _, trusted := range []bool{false, true} {
		b.Run(fmt.Sprintf("trusted=%v", trusted), func(b *testing.B) {
			s := stage(b, config.PluginSettings{Name: "router", Module: module(b, "router-go"), Config: routerConfig, Trusted: trusted}, testRouter())
			benchServe(b, s, chatBody1K, map[string]string{"X-Tier": "premium"})
		})
	}
}

// BenchmarkPIIStreamEvent is the per-event cost of on_stream_event.
func BenchmarkPIIStreamEvent(b *testing.B) {
	for _, trusted := range []bool{false, true} {
		b.Run(fmt.Sprintf("trusted=%v", trusted), func(b *testing.B) {
			s := stage(b, config.PluginSettings{Name: "pii", Module: module(b, "pii-redact"), Hooks: []string{"on_stream_event"}, Trusted: trusted}, testRouter())
			x := exchange(llm.OpenAIChat, `{"model":"gpt-4o","stream":true,"messages":[]}`, nil)
			x.Stream = true
			if err := s.Serve(x, func(*pipeline.Exchange) error { return nil }); err != nil {
				b.Fatal(err)
			}
			f := x.Filters()[0]
			// A typical chunk: a leading space, a word at the end. The last
			// word is held back and prepended to the next event, so every
			// event is patched (the steady state of a stream).
			ev := []byte(chunk(" the quick brown fox jumps over the lazy dog")[1])
			emit := func(_, _ []byte) error { return nil }
			d := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := f.Event(x, nil, ev, emit); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			b.StopTimer()
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
		})
	}
}

// TestSDKExamples builds the SDK READMEs' examples (sdk/c/example,
// sdk/go/example) and runs them in the real host.
func TestSDKExamples(t *testing.T) {
	dir := t.TempDir()
	t.Run("c", func(t *testing.T) {
		if why := missingToolchain("pii-redact"); why != "" {
			if os.Getenv("PORTCULLIS_REQUIRE_TOOLCHAINS") != "" {
				t.Fatal(why)
			}
			t.Skip(why)
		}
		out := filepath.Join(dir, "guard.wasm")
		cmd := exec.Command("clang", "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-Wall", "-Wextra", "-Werror",
			"-Wl,--strip-all", "-I", "../sdk/c", "-o", out, "../sdk/c/example/guard.c")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		s := stage(t, config.PluginSettings{Name: "guard", Module: out, Config: []byte(`{"word":"hunter2"}`)}, testRouter())
		x := exchange(llm.OpenAIChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"my password is hunter2"}]}`, nil)
		err := s.Serve(x, func(*pipeline.Exchange) error { return nil })
		if e := errs.From(err); err == nil || e.Status != 400 || e.Code != "secret_in_prompt" {
			t.Fatalf("err = %v", err)
		}
		if got := strings.Join(s.Plugins()[0].Hooks(), ","); got != "on_request,on_response" {
			t.Errorf("hooks %s", got)
		}
	})
	t.Run("go", func(t *testing.T) {
		out := filepath.Join(dir, "tagger.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./example")
		cmd.Dir = "../sdk/go"
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		s := stage(t, config.PluginSettings{Name: "tagger", Module: out}, testRouter())
		if got := strings.Join(s.Plugins()[0].Hooks(), ","); got != "on_request,on_stream_event" {
			t.Errorf("hooks %s (narrowed by the SDK at on_config)", got)
		}
		x := exchange(llm.OpenAIChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, nil)
		x.Tags = []string{"batch"}
		if err := s.Serve(x, func(*pipeline.Exchange) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if x.RouteModel != "gpt-4o-mini" || len(x.UpstreamSet) != 1 || strings.Join(x.Labels, ",") != "routed:batch" {
			t.Fatalf("route %q headers %v labels %v", x.RouteModel, x.UpstreamSet, x.Labels)
		}
	})
}
