package wasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/pricing"
	"github.com/portcullis/portcullis/engine/route"
)

// scripted returns settings for the scripted test guest whose behaviour
// is its config (see testdata/scripted.wat).
func scripted(name, behaviour string) config.PluginSettings {
	return config.PluginSettings{
		Name: name, Module: "testdata/scripted.wasm", Config: []byte(behaviour), MemoryLimitPages: 16,
		Timeout: 2 * time.Second, PoolSize: 2, FailurePolicy: "fail_closed",
	}
}

func testRouter() *route.Router {
	deps := []*route.Deployment{
		{ID: "a1", ModelName: "gpt-4o", Price: pricing.Price{Input: 2.5e-6, Output: 10e-6, MaxOutputTokens: 1000}},
		{ID: "b1", ModelName: "gpt-4o-mini"},
		{ID: "c1", ModelName: "cheap"},
	}
	return route.New(deps, route.Settings{}, zap.NewNop(), nil)
}

func build(t testing.TB, ps ...config.PluginSettings) (*Stage, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	s, err := Build(ps, Options{Log: zap.New(core), Router: testRouter(), CacheDir: "off"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(s.Close)
	return s, logs
}

const chatBody = `{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}],"max_tokens":100}`

func exchange(body string) *pipeline.Exchange {
	var h fasthttp.RequestHeader
	h.Set("Authorization", "Bearer sk-secret")
	h.Set("X-Tier", "premium")
	h.Set("User-Agent", "test")
	x := &pipeline.Exchange{ID: "gw-1", Dialect: llm.OpenAIChat, Body: []byte(body), Model: "gpt-4o", Header: &h,
		KeyAlias: "ci", TeamID: "t1", UserID: "u1", Tags: []string{"eu"}, MaxTokens: 100}
	return x
}

// serve runs the stage on x; next records that it was called.
func serve(s *Stage, x *pipeline.Exchange) (called bool, err error) {
	err = s.Serve(x, func(*pipeline.Exchange) error { called = true; return nil })
	return
}

func wantFailure(t *testing.T, err error, called bool, reason string) {
	t.Helper()
	if called {
		t.Fatal("next was called after a fail_closed failure")
	}
	e := errs.From(err)
	if err == nil || e.Status != 503 || e.Code != CodePluginFailed {
		t.Fatalf("err = %v, want 503 plugin_failed", err)
	}
	if got := ReasonOf(err); got != reason {
		t.Fatalf("reason = %q, want %q (%v)", got, reason, err)
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, c := range []struct{ module, want string }{
		{"testdata/command.wasm", "command module"},
		{"testdata/v2only.wasm", "supported: gw_abi_v1; found: gw_abi_v2"},
		{"testdata/badimport.wasm", "imports env.abort"},
		{"testdata/missing.wasm", "no such file"},
	} {
		ps := scripted("p", "Z")
		ps.Module = c.module
		_, err := Build([]config.PluginSettings{ps}, Options{CacheDir: "off"})
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want a config error containing %q", c.module, err, c.want)
		}
	}
	ps := scripted("p", "Z")
	ps.Hooks = []string{"on_request"}
	ps.MemoryLimitPages = 1
	if _, err := Build([]config.PluginSettings{ps}, Options{CacheDir: "off"}); err != nil {
		t.Fatalf("a 1-page limit for a 1-page module: %v", err)
	}
}

func TestTrapContained(t *testing.T) {
	m := NewMetrics(nil)
	s, err := Build([]config.PluginSettings{scripted("trap", "T")}, Options{Router: testRouter(), CacheDir: "off", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.Plugins()[0]
	for i := 0; i < 5; i++ {
		called, err := serve(s, exchange(chatBody))
		wantFailure(t, err, called, ReasonTrap)
	}
	if p.Live() != 0 {
		t.Fatalf("live instances = %d after traps, want 0 (discarded)", p.Live())
	}
	if n := counterValue(m.errors.WithLabelValues("trap", "on_request", "trap")); n != 5 {
		t.Errorf("errors counted: %v", n)
	}
	if n := counterValue(m.calls.WithLabelValues("trap", "on_request")); n != 5 {
		t.Errorf("calls counted: %v", n)
	}
	// proc_exit is a failure too.
	s3, _ := build(t, scripted("exit", "P"))
	called, err := serve(s3, exchange(chatBody))
	wantFailure(t, err, called, ReasonExit)
	// fail_open: the request goes on.
	ps := scripted("trap", "T")
	ps.FailurePolicy = "fail_open"
	s2, _ := build(t, ps)
	called, err = serve(s2, exchange(chatBody))
	if err != nil || !called {
		t.Fatalf("fail_open: err = %v, called = %v", err, called)
	}
}

func TestTimeout(t *testing.T) {
	ps := scripted("loop", "L")
	ps.Timeout = 20 * time.Millisecond
	s, _ := build(t, ps)
	t0 := time.Now()
	called, err := serve(s, exchange(chatBody))
	el := time.Since(t0)
	wantFailure(t, err, called, ReasonTimeout)
	if el > time.Second {
		t.Fatalf("the loop was stopped after %v, want about 20ms", el)
	}
	ps.FailurePolicy = "fail_open"
	ps.Name = "loop-open"
	s2, _ := build(t, ps)
	called, err = serve(s2, exchange(chatBody))
	if err != nil || !called {
		t.Fatalf("fail_open: err = %v, called = %v", err, called)
	}
	if s2.Plugins()[0].Live() != 0 {
		t.Fatal("the timed-out instance went back to the pool")
	}
}

func TestTrustedOverrun(t *testing.T) {
	ps := scripted("spin", "S")
	ps.Trusted = true
	ps.Timeout = time.Millisecond
	s, _ := build(t, ps)
	called, err := serve(s, exchange(chatBody))
	wantFailure(t, err, called, ReasonTimeout)
}

func TestMemoryLimit(t *testing.T) {
	ps := scripted("grow", "G")
	ps.MemoryLimitPages = 8
	s, _ := build(t, ps)
	called, err := serve(s, exchange(chatBody))
	wantFailure(t, err, called, ReasonMemory)
	// A module whose declared minimum is over the limit does not load.
	ps.MemoryLimitPages = 0
	if s.Plugins()[0].pages != 8 {
		t.Fatal("limit not kept")
	}
}

func TestBadResults(t *testing.T) {
	for _, c := range []struct{ result, reason string }{
		{"Xnot json", ReasonBadResult},
		{"O", ReasonBadResult},
		{`[1,2]`, ReasonBadResult},
		{`{"action":"explode"}`, ReasonBadAction},
		{`{"action":"route","route":{"model":"gpt-5"}}`, ReasonBadRoute},
		{`{"action":"route","route":{"model":"gpt-4o","deployment":"zz"}}`, ReasonBadRoute},
		{`{"action":"route","route":{"model":"gpt-4o","fallbacks":["nope"]}}`, ReasonBadRoute},
		{`{"action":"route"}`, ReasonBadResult},
		{`{"action":"error","error":"no"}`, ReasonPluginError},
		{`{"action":"reject","reject":{"status":200}}`, ReasonBadResult},
		{`{"patch":[{"op":"replace","path":"/nope/0","value":1}]}`, ReasonBadPatch},
		{`{"patch":[{"op":"remove","path":"/model"}]}`, ReasonBadPatch},
		{`{"patch":"x"}`, ReasonBadPatch},
		{`{"set_headers":{"x-a":"b\r\nc"}}`, ReasonBadResult},
		{`{"action":"respond"}`, ReasonBadResult},
		{`{"state":"x"}`, ""},
	} {
		s, _ := build(t, scripted("bad", c.result))
		x := exchange(chatBody)
		called, err := serve(s, x)
		if c.reason == "" {
			// fields that do not apply to the hook are ignored
			if err != nil || !called {
				t.Errorf("%s: err %v called %v", c.result, err, called)
			}
			continue
		}
		wantFailure(t, err, called, c.reason)
		if string(x.Body) != chatBody || x.RouteModel != "" || len(x.Labels) != 0 {
			t.Errorf("%s: the exchange changed after a refused result", c.result)
		}
		if s.Plugins()[0].Live() != 0 {
			t.Errorf("%s: the instance was kept", c.result)
		}
	}
}

func TestResultsApplied(t *testing.T) {
	s, logs := build(t, scripted("r", `{"action":"route","route":{"model":"gpt-4o-mini","deployment":"b1","fallbacks":["gpt-4o"]},
		"set_headers":{"X-Team":"a","Authorization":"evil","content-length":"1"},"remove_headers":["x-debug","cookie"],
		"labels":["flag:x","flag:x"],"redactions":[{"path":"/messages/0/content","kind":"email","count":2}],"log":"routed",
		"patch":[{"op":"replace","path":"/model","value":"gpt-4o-mini"},{"op":"add","path":"/stream","value":true},
		{"op":"replace","path":"/max_tokens","value":7},{"op":"add","path":"/tags","value":["batch"]}]}`))
	x := exchange(chatBody)
	called, err := serve(s, x)
	if err != nil || !called {
		t.Fatalf("err = %v, called = %v", err, called)
	}
	if x.RouteModel != "gpt-4o-mini" || x.RouteDeployment != "b1" || strings.Join(x.RequestFallbacks, ",") != "gpt-4o" {
		t.Errorf("route = %q %q %v", x.RouteModel, x.RouteDeployment, x.RequestFallbacks)
	}
	if x.Model != "gpt-4o-mini" || !x.Stream || x.MaxTokens != 7 || strings.Join(x.Tags, ",") != "batch" {
		t.Errorf("reparsed: model %q stream %v max_tokens %d tags %v", x.Model, x.Stream, x.MaxTokens, x.Tags)
	}
	if bytes.Contains(x.Body, []byte(`"tags"`)) || !bytes.Contains(x.Body, []byte(`"model":"gpt-4o-mini"`)) {
		t.Errorf("body = %s", x.Body)
	}
	if len(x.UpstreamSet) != 1 || x.UpstreamSet[0] != [2]string{"x-team", "a"} {
		t.Errorf("upstream set = %v", x.UpstreamSet)
	}
	if strings.Join(x.UpstreamRemove, ",") != "x-debug" {
		t.Errorf("upstream remove = %v", x.UpstreamRemove)
	}
	if strings.Join(x.Labels, ",") != "flag:x,redacted:email" {
		t.Errorf("labels = %v", x.Labels)
	}
	if logs.FilterMessage("plugin redacted").Len() != 1 || logs.FilterMessage("plugin note").Len() != 1 {
		t.Errorf("logs: %v", logs.All())
	}
}

func TestRejectAndRespond(t *testing.T) {
	s, _ := build(t, scripted("r", `{"action":"reject","reject":{"status":451,"message":"nope"}}`))
	called, err := serve(s, exchange(chatBody))
	e := errs.From(err)
	if called || e.Status != 451 || e.Code != CodeBlocked || e.Message != "nope" {
		t.Fatalf("reject: called %v err %v", called, err)
	}
	s, _ = build(t, scripted("r", `{"action":"respond","respond":{"body":{"id":"x",
		"choices":[]}}}`))
	x := exchange(chatBody)
	called, err = serve(s, x)
	if called || err != nil || x.Response == nil || x.Response.Status != 200 || string(x.Response.Body) != `{"id":"x","choices":[]}` ||
		x.Response.Dialect != llm.OpenAIChat {
		t.Fatalf("respond: called %v err %v response %+v", called, err, x.Response)
	}
	x = exchange(chatBody)
	x.Stream = true
	called, err = serve(s, x)
	wantFailure(t, err, called, ReasonBadAction)
}

func TestEnvelope(t *testing.T) {
	s, logs := build(t, scripted("echo", "E"))
	x := exchange(`{"model":"gpt-4o","messages":[{"role":"user","content":"héllo"},{"role":"user","content":[{"type":"text","text":"abc"}]}]}`)
	if _, err := serve(s, x); err != nil {
		t.Fatal(err)
	}
	es := logs.FilterMessageSnippet(`"hook":"on_request"`).All()
	if len(es) != 1 {
		t.Fatalf("no envelope logged: %v", logs.All())
	}
	var env struct {
		V           int               `json:"v"`
		Hook        string            `json:"hook"`
		ID          string            `json:"id"`
		Endpoint    string            `json:"endpoint"`
		Path        string            `json:"path"`
		Model       string            `json:"model"`
		Headers     map[string]string `json:"headers"`
		Principal   map[string]string `json:"principal"`
		Tags        []string          `json:"tags"`
		Models      []string          `json:"models"`
		PromptChars int               `json:"prompt_chars"`
		Cost        *float64          `json:"estimated_cost_usd"`
		Body        json.RawMessage   `json:"body"`
	}
	if err := json.Unmarshal([]byte(es[0].Message), &env); err != nil {
		t.Fatalf("envelope is not JSON: %v\n%s", err, es[0].Message)
	}
	if env.V != 1 || env.ID != "gw-1" || env.Endpoint != "chat" || env.Path != "/v1/chat/completions" || env.Model != "gpt-4o" {
		t.Errorf("head: %+v", env)
	}
	if _, ok := env.Headers["authorization"]; ok || env.Headers["x-tier"] != "premium" {
		t.Errorf("headers: %v", env.Headers)
	}
	if env.Principal["key_alias"] != "ci" || env.Principal["team_id"] != "t1" || strings.Join(env.Tags, ",") != "eu" {
		t.Errorf("principal/tags: %v %v", env.Principal, env.Tags)
	}
	if strings.Join(env.Models, ",") != "gpt-4o,gpt-4o-mini,cheap" || env.PromptChars != 8 {
		t.Errorf("models %v prompt_chars %d", env.Models, env.PromptChars)
	}
	// 2 prompt tokens at 2.5e-6 + 100 output tokens at 1e-5
	if env.Cost == nil || *env.Cost < 0.001 || *env.Cost > 0.00101 {
		t.Errorf("estimated_cost_usd = %v", env.Cost)
	}
	if string(env.Body) != string(x.Body) {
		t.Errorf("body = %s", env.Body)
	}
}

func TestApplyFilters(t *testing.T) {
	ps := scripted("r", `{"labels":["hit"]}`)
	ps.Routes = []string{"/v1/messages"}
	s, _ := build(t, ps)
	x := exchange(chatBody)
	serve(s, x)
	if len(x.Labels) != 0 {
		t.Fatal("routes filter ignored")
	}
	x.Dialect = llm.AnthropicMessages
	serve(s, x)
	if len(x.Labels) != 1 {
		t.Fatal("routes filter did not match")
	}
	ps = scripted("r", `{"labels":["hit"]}`)
	ps.Models, ps.Teams, ps.Keys = []string{"gpt-4*"}, []string{"t1"}, []string{"ci"}
	s, _ = build(t, ps)
	x = exchange(chatBody)
	serve(s, x)
	if len(x.Labels) != 1 {
		t.Fatal("models/teams/keys filter did not match")
	}
	x = exchange(chatBody)
	x.KeyAlias = "other"
	serve(s, x)
	if len(x.Labels) != 0 {
		t.Fatal("keys filter ignored")
	}
}

func TestPoolReuse(t *testing.T) {
	s, _ := build(t, scripted("ok", `{"labels":["a"]}`))
	p := s.Plugins()[0]
	for i := 0; i < 100; i++ {
		if _, err := serve(s, exchange(chatBody)); err != nil {
			t.Fatal(err)
		}
	}
	if p.Created() != 1 {
		t.Fatalf("created %d instances for sequential calls, want 1", p.Created())
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if _, err := serve(s, exchange(chatBody)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p.Live() > 2 || p.Created() > 2 {
		t.Fatalf("pool of 2: live %d, created %d", p.Live(), p.Created())
	}
}

// TestKeepsServing mixes a failing plugin with healthy requests: the
// failing one's slots come back, the healthy one never notices.
func TestKeepsServing(t *testing.T) {
	bad := scripted("bad", "T")
	bad.FailurePolicy = "fail_open"
	s, _ := build(t, bad, scripted("good", `{"labels":["ok"]}`))
	for i := 0; i < 300; i++ {
		x := exchange(chatBody)
		called, err := serve(s, x)
		if err != nil || !called || len(x.Labels) != 1 {
			t.Fatalf("call %d: err %v called %v labels %v", i, err, called, x.Labels)
		}
	}
	if s.Plugins()[0].Live() != 0 || s.Plugins()[1].Live() != 1 {
		t.Fatalf("live: %d %d", s.Plugins()[0].Live(), s.Plugins()[1].Live())
	}
}

// TestMemoryFlat makes 10,000 calls (with a discarded instance every 20)
// and checks that the Go heap, the instance count and the guest memory
// stay flat.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	bad := scripted("bad", "T")
	bad.FailurePolicy = "fail_open"
	good := scripted("good", `{"labels":["ok"],"patch":[{"op":"replace","path":"/messages/0/content","value":"x"}]}`)
	s, _ := build(t, good, bad)
	bad.Name = "bad2"
	sBad, _ := build(t, bad)
	run := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := serve(s, exchange(chatBody)); err != nil {
				t.Fatal(err)
			}
			if i%20 == 0 {
				serve(sBad, exchange(chatBody))
			}
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	run(1000) // warm up pools and caches
	before := heap()
	pages := s.Plugins()[0].pagesNow()
	run(10000)
	after := heap()
	if after > before+4<<20 {
		t.Errorf("heap grew from %d to %d bytes over 10,000 calls", before, after)
	}
	if s.Plugins()[0].Live() > 2 || s.Plugins()[1].Live() != 0 || sBad.Plugins()[0].Live() != 0 {
		t.Errorf("live instances: %d %d %d", s.Plugins()[0].Live(), s.Plugins()[1].Live(), sBad.Plugins()[0].Live())
	}
	if now := s.Plugins()[0].pagesNow(); now != pages {
		t.Errorf("guest memory went from %d to %d pages", pages, now)
	}
	t.Logf("heap in use: %d -> %d bytes; instances created: good %d, bad %d", before, after, s.Plugins()[0].Created(), sBad.Plugins()[0].Created())
}

func TestStreamFilter(t *testing.T) {
	// insert + patch + state echo + drop
	ps := scripted("ev", `{"insert":[{"data":"[PRE]"},{"event":"x","data":{"a":1}}],
		"patch":[{"op":"replace","path":"/n","value":2}],"state":"st","labels":["seen"]}`)
	ps.Hooks = []string{"on_response", "on_stream_event", "on_stream_end"}
	s, _ := build(t, ps)
	x := exchange(chatBody)
	x.Stream = true
	if _, err := serve(s, x); err != nil {
		t.Fatal(err)
	}
	fs := x.Filters()
	if len(fs) != 1 {
		t.Fatalf("filters: %d", len(fs))
	}
	var out []string
	emit := func(name, data []byte) error { out = append(out, string(name)+"|"+string(data)); return nil }
	if err := fs[0].Event(x, nil, []byte(`{"n":1}`), emit); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(out, " "); got != `|[PRE] x|{"a":1} |{"n":2}` {
		t.Errorf("events: %s", got)
	}
	f := fs[0].(*filter)
	if string(f.st[0].state) != `"st"` || f.st[0].events != 1 {
		t.Errorf("state %s events %d", f.st[0].state, f.st[0].events)
	}
	if err := fs[0].End(x, true, emit); err != nil {
		t.Fatal(err)
	}
	// on_response: patch of the body
	body, err := fs[0].Body(x, []byte(`{"n":1,"m":"<b>"}`))
	if err != nil || string(body) != `{"n":2,"m":"<b>"}` {
		t.Errorf("body: %s %v", body, err)
	}
	// fail_closed mid-stream: an error ends the stream.
	x = exchange(chatBody)
	ps = scripted("trap", "T")
	ps.Hooks = []string{"on_stream_event"}
	s, _ = build(t, ps)
	if _, err := serve(s, x); err != nil {
		t.Fatal(err)
	}
	if err := x.Filters()[0].Event(x, nil, []byte(`{}`), emit); errs.CodeOf(err) != CodePluginFailed {
		t.Fatalf("mid-stream failure: %v", err)
	}
}

func TestClose(t *testing.T) {
	s, _ := build(t, scripted("ok", "Z"))
	s.Close()
	called, err := serve(s, exchange(chatBody))
	wantFailure(t, err, called, ReasonClosed)
	s.Close()
}

func TestCompilationCache(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		s, err := Build([]config.PluginSettings{scripted("ok", "Z")}, Options{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) == 0 {
		t.Fatal("the compilation cache directory is empty")
	}
}

func TestInspect(t *testing.T) {
	code, _ := os.ReadFile("testdata/scripted.wasm")
	info, err := Inspect(t.Context(), code)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Supported || strings.Join(info.Hooks, ",") != "on_request,on_response,on_stream_event,on_stream_end" ||
		info.MemoryMin != 1 || len(info.Problems) != 0 {
		t.Fatalf("info: %+v", info)
	}
	code, _ = os.ReadFile("testdata/command.wasm")
	info, _ = Inspect(t.Context(), code)
	if len(info.Problems) == 0 || !info.Command {
		t.Fatalf("command: %+v", info)
	}
}

// TestGuestsUpToDate rebuilds the .wat guests when wat2wasm is installed
// and compares them with the checked-in .wasm files.
func TestGuestsUpToDate(t *testing.T) {
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm (Debian wabt) not installed; the checked-in .wasm files are used as they are")
	}
	ws, _ := filepath.Glob("testdata/*.wat")
	for _, w := range ws {
		out := filepath.Join(t.TempDir(), "g.wasm")
		if b, err := exec.Command("wat2wasm", "-o", out, w).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", w, err, b)
		}
		got, _ := os.ReadFile(out)
		want, _ := os.ReadFile(strings.TrimSuffix(w, ".wat") + ".wasm")
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: cd engine/wasm/testdata && go run gen.go", strings.TrimSuffix(w, ".wat")+".wasm")
		}
	}
}

func TestPromptChars(t *testing.T) {
	for _, c := range []struct {
		d    llm.Dialect
		body string
		want int
	}{
		{llm.OpenAIChat, `{"model":"m","messages":[{"role":"system","content":"ab"},{"content":[{"type":"text","text":"héé"},{"type":"image_url"}],"role":"user"}]}`, 5},
		{llm.AnthropicMessages, `{"system":[{"type":"text","text":"abc"}],"messages":[{"role":"user","content":"d\u00e9"}]}`, 5},
		{llm.OpenAICompletion, `{"prompt":["ab","c"],"messages":[{"content":"ignored"}]}`, 3},
		{llm.OpenAIEmbedding, `{"input":"abcd"}`, 4},
	} {
		if got := promptChars(c.d, []byte(c.body)); got != c.want {
			t.Errorf("%s: %d, want %d", c.body, got, c.want)
		}
	}
}

func FuzzPromptChars(f *testing.F) {
	f.Add(`{"model":"m","messages":[{"role":"user","content":"a\"b\\c\u00e9"},{"content":[{"type":"text","text":"x"}]}],"system":"s"}`)
	f.Add(`{"messages":[1,"x",{"content":{"text":"no"}}],"system":[{"text":"ab"},"c"]}`)
	f.Fuzz(func(t *testing.T, body string) {
		if !gjson.Valid(body) {
			return
		}
		// The scanner agrees with a general parser.
		want := 0
		count := func(v gjson.Result) {
			switch {
			case v.Type == gjson.String:
				want += utf8.RuneCountInString(v.Str)
			case v.IsArray():
				v.ForEach(func(_, p gjson.Result) bool {
					if p.Type == gjson.String {
						want += utf8.RuneCountInString(p.Str)
					} else if p.IsObject() {
						p.ForEach(func(k, tv gjson.Result) bool {
							if k.Str == "text" && tv.Type == gjson.String {
								want += utf8.RuneCountInString(tv.Str)
							}
							return true
						})
					}
					return true
				})
			}
		}
		root := gjson.Parse(body)
		if !root.IsObject() {
			return
		}
		root.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "system":
				count(v)
			case "messages":
				if v.IsArray() {
					v.ForEach(func(_, m gjson.Result) bool {
						if m.IsObject() {
							m.ForEach(func(mk, mv gjson.Result) bool {
								if mk.Str == "content" {
									count(mv)
								}
								return true
							})
						}
						return true
					})
				}
			}
			return true
		})
		if got := promptChars(llm.OpenAIChat, []byte(body)); got != want {
			t.Fatalf("%s: %d, want %d", body, got, want)
		}
	})
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestPayloadLast checks the ABI's promise that body and data are the
// envelopes' last members.
func TestPayloadLast(t *testing.T) {
	s, _ := build(t, scripted("z", "Z"))
	x := exchange(chatBody)
	for _, c := range []struct {
		env  []byte
		last string
	}{
		{s.Envelope(HookRequest, x, nil), "body"},
		{s.Envelope(HookResponse, x, []byte(`{"id":"r"}`)), "body"},
		{appendEventEnvelope(nil, x, 2, []byte("ev"), []byte(`{"a":1}`), []byte(`"held"`)), "data"},
		{appendEventEnvelope(nil, x, 3, nil, []byte("[DONE]"), nil), "data"},
	} {
		var keys []string
		gjson.ParseBytes(c.env).ForEach(func(k, _ gjson.Result) bool { keys = append(keys, k.Str); return true })
		if !gjson.ValidBytes(c.env) || len(keys) == 0 || keys[len(keys)-1] != c.last {
			t.Errorf("%s: keys %v", c.env, keys)
		}
	}
}

// readmitter is a Settler that records Readmit calls and may refuse.
type readmitter struct {
	calls []string
	deny  error
}

func (r *readmitter) Settle(*pipeline.Exchange) {}
func (r *readmitter) Readmit(x *pipeline.Exchange) error {
	r.calls = append(r.calls, x.RouteGroup())
	return r.deny
}

// A route decision to another model group is admitted again by the stage
// that admitted the request (the key stage: model lists, budget); its
// refusal is the request's answer. A route within the same group is not.
func TestRouteIsReadmitted(t *testing.T) {
	s, _ := build(t, scripted("r", `{"action":"route","route":{"model":"gpt-4o-mini"}}`))
	x := exchange(chatBody)
	ra := &readmitter{}
	x.Settler = ra
	if called, err := serve(s, x); err != nil || !called {
		t.Fatalf("err = %v, called = %v", err, called)
	}
	if strings.Join(ra.calls, ",") != "gpt-4o-mini" {
		t.Fatalf("readmit calls = %v", ra.calls)
	}
	x = exchange(chatBody)
	ra = &readmitter{deny: errs.New(403, "model_not_allowed", "no")}
	x.Settler = ra
	called, err := serve(s, x)
	var e *errs.Error
	if called || !errors.As(err, &e) || e.Code != "model_not_allowed" {
		t.Fatalf("refused readmission: called %v err %v", called, err)
	}

	same, _ := build(t, scripted("r", `{"action":"route","route":{"model":"gpt-4o","deployment":"a1"}}`))
	x = exchange(chatBody)
	ra = &readmitter{}
	x.Settler = ra
	if called, err := serve(same, x); err != nil || !called || len(ra.calls) != 0 {
		t.Fatalf("route within the group: called %v err %v readmits %v", called, err, ra.calls)
	}
}
