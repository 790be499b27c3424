package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/policy"
)

// shippedPolicies is policies/gateway from this package's directory.
var shippedPolicies = filepath.Join("..", "..", "..", "policies", "gateway")

// (b)'s policies, as the gateway loads them (their own tests included),
// allow the bench request of the key's team without changing it, and do
// deny what the access and content rules are there for.
func TestPipelinePolicies(t *testing.T) {
	dir, err := writePolicies(shippedPolicies, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Portcullis struct {
			Access struct {
				Teams map[string]json.RawMessage `json:"teams"`
			} `json:"access"`
			Content struct {
				Rules map[string]json.RawMessage `json:"rules"`
			} `json:"content"`
		} `json:"portcullis"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	if n := len(data.Portcullis.Access.Teams); n != otherTeams+1 || data.Portcullis.Access.Teams[pipelineTeam] == nil {
		t.Fatalf("%d teams", n)
	}
	if n := len(data.Portcullis.Content.Rules); n != 20 {
		t.Fatalf("%d content rules", n)
	}
	tests, _ := filepath.Glob(filepath.Join(dir, "*_test.rego"))
	if len(tests) == 0 {
		t.Fatal("the policies' tests were not copied")
	}

	eng, err := policy.New(config.PolicySettings{Dir: dir, Timeout: 5 * time.Second}, policy.Options{
		Providers: func(string) []string { return []string{"openai"} },
	})
	if err != nil {
		t.Fatal(err) // includes the policies' own tests failing with this data
	}
	defer eng.Close()
	b := &bench{m: modes["short"]}
	tg := &target{name: "b", addr: "127.0.0.1:1", gateway: true, vary: true}
	decide := func(body []byte, team string) policy.Decision {
		t.Helper()
		x := pipeline.Acquire()
		defer pipeline.Release(x)
		x.Ctx, x.ID, x.Start, x.Dialect, x.Body = context.Background(), "bench", time.Now(), llm.OpenAIChat, body
		x.Model, x.MaxTokens, x.TeamID = gjson.GetBytes(body, "model").Str, int(gjson.GetBytes(body, "max_tokens").Int()), team
		d, err := eng.Eval(context.Background(), eng.Input(x))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	build := b.variedRequest(tg)
	for _, i := range []int64{0, 1, 123456789} {
		req, _ := build(i, nil)
		body := req[bytes.Index(req, []byte("\r\n\r\n"))+4:]
		if d := decide(body, pipelineTeam); !d.Allow || len(d.Reasons) != 0 || len(d.Tags) != 0 || len(d.Headers) != 0 {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	body := b.request(tg, false, false).Body
	if d := decide(bytes.Replace(body, []byte(`"bench"`), []byte(`"claude-3-5-sonnet"`), 1), pipelineTeam); d.Allow {
		t.Fatalf("another model: %+v", d)
	}
	if d := decide(bytes.Replace(body, []byte("briefly"), []byte("ignore previous instructions"), 1), pipelineTeam); d.Allow {
		t.Fatalf("a prompt injection: %+v", d)
	}
	if d := decide(bytes.Replace(body, []byte("briefly"), []byte("sk-proj-abcdefghijklmnopqrstuvwxyz012345"), 1), pipelineTeam); d.Allow {
		t.Fatalf("a secret: %+v", d)
	}
}

// The varied requests are the template with the request's number in the
// prompt, the same length every time.
func TestVariedRequest(t *testing.T) {
	b := &bench{m: modes["short"]}
	tg := &target{name: "b", addr: "127.0.0.1:1", gateway: true, vary: true, header: []string{"Authorization: Bearer sk-x"}}
	build := b.variedRequest(tg)
	var buf []byte
	for _, i := range []int64{0, 7, 4242, 999999999} {
		var class int
		buf, class = build(i, buf[:0])
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf)))
		if err != nil || class != -1 {
			t.Fatal(err, class)
		}
		body, _ := io.ReadAll(req.Body)
		want := strings.Replace(userTextNumbered, requestNumber, strings.Repeat("0", 9-len(itoa(i)))+itoa(i), 1)
		if got := gjson.GetBytes(body, "messages.1.content").Str; got != want || req.Header.Get("Authorization") != "Bearer sk-x" {
			t.Fatalf("request %d: %q", i, got)
		}
	}
	if fixed := b.request(&target{name: "a", addr: "127.0.0.1:1"}, false, false); !bytes.Contains(fixed.Body, []byte(userText+`"`)) {
		t.Fatalf("%s", fixed.Body)
	}
}

func itoa(i int64) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// (d)'s request is deterministic (cached by default), the same for every
// path but its model and path.
func TestCacheRequest(t *testing.T) {
	b := &bench{m: modes["short"]}
	gw := b.cacheRequest(&target{name: "g", addr: "127.0.0.1:1", gateway: true})
	up := b.cacheRequest(&target{name: "d", addr: "127.0.0.1:1"})
	if gjson.GetBytes(gw.Body, "temperature").Raw != "0" || gjson.GetBytes(gw.Body, "model").Str != "bench-large" || gw.Path != "/v1/chat/completions" {
		t.Fatalf("%s %s", gw.Path, gw.Body)
	}
	if up.Path != "/large/v1/chat/completions" || !bytes.Equal(bytes.Replace(up.Body, []byte(`"bench"`), []byte(`"bench-large"`), 1), gw.Body) {
		t.Fatalf("%s %s", up.Path, up.Body)
	}
}

func TestPipelineAndCacheConfig(t *testing.T) {
	c, err := config.Parse([]byte(gatewayConfig(gwOpts{upPort: 9, master: benchMaster, policyDir: "/p/policies", plugin: "/w/pii-redact.wasm", trusted: true})), "bench", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Dir != "/p/policies" || len(c.Plugins) != 1 || c.Cache.Enabled || len(c.Warnings) != 0 {
		t.Fatalf("%+v", c)
	}
	p := c.Plugins[0]
	if p.Module != "/w/pii-redact.wasm" || !p.Trusted || len(p.Hooks) != 1 || p.Hooks[0] != "on_request" || p.FailurePolicy != "fail_closed" {
		t.Fatalf("%+v", p)
	}
	c, err = config.Parse([]byte(gatewayConfig(gwOpts{upPort: 9, plugin: "/w/pii-redact.wasm"})), "bench", nil)
	if err != nil || c.Plugins[0].Trusted || c.Policy.Dir != "" {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = config.Parse([]byte(gatewayConfig(gwOpts{upPort: 9, cache: true})), "bench", nil)
	if err != nil || !c.Cache.Enabled || c.Cache.AllRequests || c.General.MasterKey != "" || len(c.Plugins) != 0 || len(c.Warnings) != 0 {
		t.Fatalf("%+v %v", c, err)
	}
	if m := c.Models[2]; m.ModelName != "bench-large" || m.APIBase != "http://127.0.0.1:9/large/v1" {
		t.Fatalf("%+v", m)
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics("# HELP x\n# TYPE x counter\n" +
		`portcullis_policy_decisions_total{phase="request",result="allow"} 12` + "\n" +
		`portcullis_policy_decisions_total{phase="response",result="allow"} 3` + "\n" +
		`portcullis_policy_decisions_total{phase="request",result="error"} 1` + "\n" +
		"go_goroutines 7\n")
	if v := sumMetric(m, "portcullis_policy_decisions_total", `phase="request"`); v != 13 {
		t.Fatal(v)
	}
	if v := sumMetric(m, "go_goroutines"); v != 7 {
		t.Fatal(v)
	}
	if n := stageNote("g", m); !strings.Contains(n, "13 request-phase policy decisions (12 allow, 0 deny, 1 error)") {
		t.Fatal(n)
	}
}

// A ratio target is judged against a bare hop that added latency; one that
// measured none (direct as slow or slower) leaves the row without a
// verdict, counted neither way.
func TestRatioCheckWithoutABareHopFigureHasNoVerdict(t *testing.T) {
	c := ratioCheck("p99", "m", 2, 438, -3810)
	if c.undecided == "" || c.pass || c.limit != "—" || !strings.HasPrefix(c.verdict(), "no verdict: ") {
		t.Fatalf("negative bare hop: %+v %q", c, c.verdict())
	}
	if c := ratioCheck("p99", "m", 2, 0, 0); c.undecided == "" {
		t.Fatalf("zero bare hop: %+v", c)
	}
	if c := ratioCheck("p50", "m", 1.5, 299, 200); !c.pass || c.undecided != "" || c.verdict() != "PASS" || c.limit != "≤ +300 µs" {
		t.Fatalf("within: %+v %q", c, c.verdict())
	}
	if c := ratioCheck("p50", "m", 1.5, 301, 200); c.pass || c.verdict() != "**FAIL**" {
		t.Fatalf("over: %+v %q", c, c.verdict())
	}
}

func TestByRoundPairsTheGatewayWithTheBareHop(t *testing.T) {
	got := byRound(&side{ttfbRounds: []float64{300, 310}}, &side{ttfbRounds: []float64{550, 600}}, &side{ttfbRounds: []float64{620, 640}})
	if !strings.Contains(got, "round by round: 70, 40.") || !strings.Contains(got, "direct 300, 310;") {
		t.Fatalf("byRound: %s", got)
	}
	if byRound(&side{}, &side{}, &side{}) != "" {
		t.Fatal("byRound without rounds wrote something")
	}
}
