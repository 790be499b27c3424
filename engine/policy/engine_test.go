package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

const chatReq = `{"model":"gpt-4o","max_tokens":2000,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Mail jane@example.com about card 4111 1111 1111 1111"}]}`

// policyDir writes a one-module policy (package gateway) and optional
// data.json.
func policyDir(t *testing.T, rego, data string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"gateway/policy.rego": "package gateway\n\n" + rego}
	if data != "" {
		files["data.json"] = data
	}
	writeFiles(t, dir, files)
	return dir
}

func errCode(t *testing.T, err error) *errs.Error {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an *errs.Error, got %v", err)
	}
	return e
}

func TestAllowAndDeny(t *testing.T) {
	dir := policyDir(t, `
decision := {"allow": true} if input.llm.model == "gpt-4o"
else := {"allow": false, "status": 429, "reasons": [
	{"code": "model_quota", "status": 429, "message": "model quota for this team is used up"},
	{"code": "also_bad", "status": 400, "message": "second reason"},
]}
`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	x := exchange(chatReq)
	reached, err := serve(e, x)
	if err != nil || !reached {
		t.Fatalf("allowed request: reached=%v err=%v", reached, err)
	}
	if x.PolicyVersion != e.Revision() || len(x.PolicyVersion) != 12 {
		t.Fatalf("PolicyVersion %q, revision %q", x.PolicyVersion, e.Revision())
	}

	x = exchange(strings.Replace(chatReq, "gpt-4o", "o1", 1))
	reached, err = serve(e, x)
	if reached {
		t.Fatal("denied request reached next")
	}
	ee := errCode(t, err)
	if ee.Status != 429 || ee.Code != "model_quota" || ee.Message != "model quota for this team is used up" || ee.Type != TypePolicyViolation {
		t.Fatalf("denial = %+v", ee)
	}
	if x.PolicyVersion == "" {
		t.Fatal("a denied request records the revision too")
	}
	body := string(ee.AppendOpenAI(nil))
	if !strings.Contains(body, `"type":"policy_violation"`) || !strings.Contains(body, `"code":"model_quota"`) {
		t.Fatalf("openai error body %s", body)
	}
}

func TestDenyDefaults(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": false}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	_, err := serve(e, exchange(chatReq))
	ee := errCode(t, err)
	if ee.Status != 403 || ee.Code != "policy_denied" {
		t.Fatalf("denial = %+v", ee)
	}
}

func TestMutations(t *testing.T) {
	dir := policyDir(t, `
decision := {
	"allow": true,
	"mutations": {
		"model": "gpt-4o-mini",
		"max_tokens": 256,
		"headers": {"set": {"x-team": "t1"}, "remove": ["x-debug"]},
		"redact": [
			{"path": "/messages/1/content", "find": "jane@example.com", "replace": "[EMAIL]"},
			{"path": "/messages/0/content", "replace": "[SYSTEM]"},
		],
	},
	"headers": {"x-policy": "checked"},
	"tags": ["flag:pii", "team:t1"],
}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	x := exchange(chatReq)
	original := string(x.Body)
	bodyBuf := x.Body
	var seen *pipeline.Exchange
	err := e.Middleware().Serve(x, func(x *pipeline.Exchange) error { seen = x; return nil })
	if err != nil || seen == nil {
		t.Fatal(err)
	}
	if string(bodyBuf) != original {
		t.Fatal("the server's request buffer was modified")
	}
	body := string(x.Body)
	if got := gjson.Get(body, "max_tokens").Int(); got != 256 || x.MaxTokens != 256 {
		t.Fatalf("max_tokens body=%d x=%d: %s", got, x.MaxTokens, body)
	}
	if got := gjson.Get(body, "messages.1.content").Str; got != "Mail [EMAIL] about card 4111 1111 1111 1111" {
		t.Fatalf("redacted text %q", got)
	}
	if got := gjson.Get(body, "messages.0.content").Str; got != "[SYSTEM]" {
		t.Fatalf("replaced text %q", got)
	}
	if x.RouteModel != "gpt-4o-mini" || x.RouteGroup() != "gpt-4o-mini" {
		t.Fatalf("RouteModel %q", x.RouteModel)
	}
	if len(x.UpstreamSet) != 1 || x.UpstreamSet[0] != [2]string{"x-team", "t1"} || len(x.UpstreamRemove) != 1 || x.UpstreamRemove[0] != "x-debug" {
		t.Fatalf("upstream headers %v %v", x.UpstreamSet, x.UpstreamRemove)
	}
	if len(x.ResponseSet) != 1 || x.ResponseSet[0] != [2]string{"x-policy", "checked"} {
		t.Fatalf("response headers %v", x.ResponseSet)
	}
	if strings.Join(x.Labels, ",") != "flag:pii,team:t1" {
		t.Fatalf("labels %v", x.Labels)
	}
}

func TestMaxTokensCap(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": true, "mutations": {"max_tokens": 100}}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	for _, tc := range []struct {
		name, body string
		dialect    llm.Dialect
		max        int
		want       map[string]int64
	}{
		{"lowered", `{"model":"m","max_tokens":500,"messages":[]}`, llm.OpenAIChat, 500, map[string]int64{"max_tokens": 100}},
		{"both fields", `{"model":"m","max_tokens":500,"max_completion_tokens":50,"messages":[]}`, llm.OpenAIChat, 50,
			map[string]int64{"max_tokens": 100, "max_completion_tokens": 50}},
		{"added for chat", `{"model":"m","messages":[]}`, llm.OpenAIChat, 0, map[string]int64{"max_completion_tokens": 100}},
		{"added for messages", `{"model":"m","messages":[]}`, llm.AnthropicMessages, 0, map[string]int64{"max_tokens": 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := exchange(tc.body)
			x.Dialect, x.MaxTokens = tc.dialect, tc.max
			if _, err := serve(e, x); err != nil {
				t.Fatal(err)
			}
			for f, v := range tc.want {
				if got := gjson.GetBytes(x.Body, f).Int(); got != v {
					t.Fatalf("%s = %d, want %d (%s)", f, got, v, x.Body)
				}
			}
			if want := min(100, max(tc.max, 0)); tc.max > 0 && x.MaxTokens != want || tc.max == 0 && x.MaxTokens != 100 {
				t.Fatalf("x.MaxTokens = %d", x.MaxTokens)
			}
		})
	}
	// Under the cap: the body is not touched.
	x := exchange(`{"model":"m","max_tokens":10,"messages":[]}`)
	x.MaxTokens = 10
	before := &x.Body[0]
	if _, err := serve(e, x); err != nil || &x.Body[0] != before || x.MaxTokens != 10 {
		t.Fatalf("a request under the cap was rewritten: %v %s", err, x.Body)
	}
}

func TestRedactContentParts(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": true, "mutations": {"redact": [{"path": "/messages/0/content", "find": "secret", "replace": "***"}]}}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	x := exchange(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a secret"},{"type":"image_url","image_url":{"url":"http://x/secret.png"}},{"type":"text","text":"another secret here"}]}]}`)
	if _, err := serve(e, x); err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(x.Body, "messages.0.content.0.text").Str; got != "a ***" {
		t.Fatalf("part 0 %q", got)
	}
	if got := gjson.GetBytes(x.Body, "messages.0.content.2.text").Str; got != "another *** here" {
		t.Fatalf("part 2 %q", got)
	}
	if got := gjson.GetBytes(x.Body, "messages.0.content.1.image_url.url").Str; got != "http://x/secret.png" {
		t.Fatalf("image part changed: %q", got)
	}
}

func TestRedactMissingPathFailsClosed(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": true, "mutations": {"redact": [{"path": "/messages/9/content", "replace": "x"}]}}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	x := exchange(chatReq)
	_, err := serve(e, x)
	if ee := errCode(t, err); ee.Status != 503 || ee.Code != CodePolicyError {
		t.Fatalf("got %+v", ee)
	}
	if x.RouteModel != "" || string(x.Body) != chatReq {
		t.Fatal("a failed mutation changed the exchange")
	}
}

func TestFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name, rego, data, kind string
		timeout                time.Duration
	}{
		{"strict builtin error", `decision := {"allow": regex.match(data.portcullis.pattern, input.llm.model)}`, `{"portcullis":{"pattern":"(["}}`, "eval", 0},
		{"custom builtin error", `decision := {"allow": count(portcullis.match({"bad": "(["}, "x")) == 0}`, "", "eval", 0},
		{"undefined decision", `decision := {"allow": true} if input.llm.model == "never"`, "", "undefined", 0},
		{"wrong shape", `decision := {"allow": "yes"}`, "", "shape", 0},
		{"unknown key", `decision := {"allow": true, "mutation": {}}`, "", "shape", 0},
		{"unknown mutation", `decision := {"allow": true, "mutations": {"temperature": 0}}`, "", "shape", 0},
		{"bad status", `decision := {"allow": false, "status": 700}`, "", "shape", 0},
		{"conflict", `decision := {"allow": true} if true
decision := {"allow": false} if true`, "", "eval", 0},
		{"timeout", `decision := {"allow": count([x | some x in numbers.range(1, 3000000); x % 7 == 0]) > 0}`, "", "timeout", time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, tc.rego, tc.data)
			e, logs := newEngine(t, config.PolicySettings{Dir: dir, Timeout: max(tc.timeout, time.Second)})
			if tc.timeout > 0 {
				e.s.Timeout = tc.timeout
			}
			x := exchange(chatReq)
			reached, err := serve(e, x)
			if reached {
				t.Fatal("request reached next")
			}
			ee := errCode(t, err)
			if ee.Status != 503 || ee.Code != CodePolicyError || !strings.Contains(ee.Message, tc.kind) {
				t.Fatalf("got %+v", ee)
			}
			var pe *EvalError
			if !errors.As(err, &pe) || pe.Kind != tc.kind {
				t.Fatalf("cause %v", err)
			}
			if logs.FilterMessage("policy failed; request refused (fail closed)").Len() != 1 {
				t.Fatal("failure not logged")
			}

			// fail_open lets the same request through, labelled.
			e.s.FailOpen = true
			x = exchange(chatReq)
			reached, err = serve(e, x)
			if err != nil || !reached {
				t.Fatalf("fail_open: reached=%v err=%v", reached, err)
			}
			if len(x.Labels) != 1 || x.Labels[0] != "policy:error" {
				t.Fatalf("labels %v", x.Labels)
			}
		})
	}
}

func TestInputDocument(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": true}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir, MaxTextBytes: 40})
	e.provider = func(g string) []string { return []string{"openai", "azure"} }
	x := exchange(`{"model":"gpt-4o","temperature":0.2,"stream":true,"metadata":{"project":"apollo","n":[1,{"a":true}]},
		"tools":[{"type":"function","function":{"name":"lookup"}}],
		"messages":[{"role":"system","content":"You are a bot."},{"role":"user","content":[{"type":"text","text":"first part"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"second part that is long"}]}]}`)
	x.Stream, x.MaxTokens, x.Tags = true, 99, []string{"t1"}
	x.KeyHash, x.KeyAlias, x.TeamID, x.UserID, x.Key = "abc123", "ci", "team-1", "u-1", []byte("sk-secret")
	v := e.Input(x)
	s := v.String()
	for _, bad := range []string{"authorization", "Bearer", "sk-secret"} {
		if strings.Contains(s, bad) {
			t.Fatalf("input leaks %q: %s", bad, s)
		}
	}
	get := func(path string) any {
		t.Helper()
		ref := ast.MustParseRef("input." + path)
		term := v.(ast.Object).Get(ref[1])
		for _, k := range ref[2:] {
			if term == nil {
				return nil
			}
			switch c := term.Value.(type) {
			case ast.Object:
				term = c.Get(k)
			case *ast.Array:
				n, _ := k.Value.(ast.Number).Int()
				term = c.Elem(n)
			}
		}
		if term == nil {
			return nil
		}
		out, _ := ast.JSON(term.Value)
		return out
	}
	for path, want := range map[string]string{
		"request.id": "req-1", "request.method": "POST", "request.path": "/v1/chat/completions",
		`request.headers["x-region"]`: "eu", `request.headers["user-agent"]`: "test",
		"principal.key_alias": "ci", "principal.key_hash": "abc123", "principal.team_id": "team-1", "principal.user_id": "u-1",
		"llm.endpoint": "chat.completions", "llm.model": "gpt-4o", "llm.model_group": "gpt-4o",
		"llm.messages[0].role": "system", "llm.messages[0].text": "You a", "llm.messages[0].path": "/messages/0/content",
		"llm.messages[1].path": "/messages/1/content", "llm.tools[0]": "lookup", "llm.metadata.project": "apollo",
		"llm.providers[1]": "azure", "llm.tags[0]": "t1",
	} {
		if got := get(path); got != want {
			t.Errorf("%s = %v, want %q", path, got, want)
		}
	}
	// The text cap keeps the newest text: the user message's 35 bytes
	// fit first; the system message gets the 5 left.
	if got := get("llm.messages[1].text"); got != "first part\nsecond part that is long" {
		t.Errorf("user text %v", got)
	}
	if get("llm.truncated") != true {
		t.Error("truncated should be true")
	}
	if get("llm.stream") != true || get("llm.max_tokens") == nil || get("llm.prompt_bytes") == nil || get("llm.estimated_prompt_tokens") == nil {
		t.Error("missing stream, max_tokens or size figures")
	}
	if get("principal.authenticated") != true {
		t.Error("authenticated")
	}
}

func TestInputAnthropicAndCompletions(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": true}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	x := exchange(`{"model":"claude","system":[{"type":"text","text":"sys"}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"tool out"}]}],"tools":[{"name":"calc"}]}`)
	x.Dialect = llm.AnthropicMessages
	s := e.Input(x).String()
	for _, want := range []string{`"path": "/system"`, `"text": "sys"`, `"text": "tool out"`, `"calc"`, `"endpoint": "messages"`} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %s in %s", want, s)
		}
	}
	x = exchange(`{"model":"m","prompt":["a","b"]}`)
	x.Dialect = llm.OpenAICompletion
	s = e.Input(x).String()
	if !strings.Contains(s, `"path": "/prompt/1"`) {
		t.Errorf("completion prompt: %s", s)
	}
}

func TestBadReloadKeepsRevision(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": true}`, "")
	e, logs := newEngine(t, config.PolicySettings{Dir: dir})
	old := e.Revision()
	writeFiles(t, dir, map[string]string{"gateway/policy.rego": "package gateway\n\ndecision := {\"allow\": true\n"})
	err := e.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "rego_parse_error") {
		t.Fatalf("reload error %v", err)
	}
	st := e.Status()
	if e.Revision() != old || st.Revision != old || !strings.Contains(st.LastError, "rego_parse_error") || st.LastErrorAt.IsZero() {
		t.Fatalf("status %+v", st)
	}
	if logs.FilterMessage("policy reload refused; the running revision stays").Len() != 1 {
		t.Fatal("refusal not logged")
	}
	if _, err := serve(e, exchange(chatReq)); err != nil {
		t.Fatal("the old revision stopped serving:", err)
	}

	// A compile error (unknown function) and a missing decision too.
	for _, src := range []string{"decision := {\"allow\": nope(1)}\n", "other := 1\n"} {
		writeFiles(t, dir, map[string]string{"gateway/policy.rego": "package gateway\n\n" + src})
		if err := e.Reload(context.Background()); err == nil || e.Revision() != old {
			t.Fatalf("%q loaded (err %v)", src, err)
		}
	}
	// A bad pattern in a pattern set refuses the revision at load.
	writeFiles(t, dir, map[string]string{"gateway/policy.rego": "package gateway\n\ndecision := {\"allow\": true}\npattern_sets := [{\"r\": \"([\"}]\n"})
	if err := e.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), `rule "r"`) {
		t.Fatalf("bad pattern: %v", err)
	}

	// A good one then replaces it and clears the error.
	writeFiles(t, dir, map[string]string{"gateway/policy.rego": "package gateway\n\ndecision := {\"allow\": false}\n"})
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.Revision() == old || e.Status().LastError != "" {
		t.Fatalf("status %+v", e.Status())
	}
}

func TestNewFailsOnBrokenPolicy(t *testing.T) {
	dir := policyDir(t, `decision := {`, "")
	if _, err := New(config.PolicySettings{Dir: dir}, Options{}); err == nil {
		t.Fatal("New accepted a broken policy")
	}
	if _, err := New(config.PolicySettings{}, Options{}); err == nil {
		t.Fatal("New accepted no source")
	}
}

func TestFailingTestsBlockReload(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": input.llm.model != "blocked"}`, "")
	writeFiles(t, dir, map[string]string{"gateway/policy_test.rego": `package gateway_test

import data.gateway

test_blocked if not gateway.decision.allow with input as {"llm": {"model": "blocked"}}
`})
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	old := e.Revision()
	// The change breaks the policy's own test.
	writeFiles(t, dir, map[string]string{"gateway/policy.rego": "package gateway\n\ndecision := {\"allow\": true}\n"})
	err := e.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "1 of 1 tests fail: data.gateway_test.test_blocked") {
		t.Fatalf("reload error %v", err)
	}
	if e.Revision() != old {
		t.Fatal("revision replaced")
	}
	// skip_tests loads it anyway.
	e.s.SkipTests = true
	if err := e.Reload(context.Background()); err != nil || e.Revision() == old {
		t.Fatalf("skip_tests: %v", err)
	}
}

func TestWatchReloadsOnDataChange(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": input.llm.model in data.portcullis.allowed}`, `{"portcullis":{"allowed":["gpt-4o"]}}`)
	e, logs := newEngine(t, config.PolicySettings{Dir: dir, Watch: true, WatchInterval: 10 * time.Millisecond})
	if _, err := serve(e, exchange(chatReq)); err != nil {
		t.Fatal(err)
	}
	old := e.Revision()
	writeFiles(t, dir, map[string]string{"data.json": `{"portcullis":{"allowed":["other"]}}`})
	deadline := time.Now().Add(5 * time.Second)
	for e.Revision() == old && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.Revision() == old {
		t.Fatal("data change not picked up")
	}
	if _, err := serve(e, exchange(chatReq)); err == nil {
		t.Fatal("new data not used")
	}
	if logs.FilterMessage("policies loaded").Len() < 2 {
		t.Fatal("reload not logged")
	}
	e.Close()
	e.Close() // idempotent
}

func TestBundle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.tar.gz")
	writeBundle(t, path, map[string]string{
		"/gateway/policy.rego":  "package gateway\n\ndecision := {\"allow\": input.llm.model in data.portcullis.allowed}\n",
		"/portcullis/data.json": `{"allowed":["gpt-4o"]}`,
	})
	e, _ := newEngine(t, config.PolicySettings{Bundle: path})
	if _, err := serve(e, exchange(chatReq)); err != nil {
		t.Fatal(err)
	}
	if st := e.Status(); st.Source != path || st.Files != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestConcurrentReload checks that each request sees one revision for both
// phases while revisions are swapped under it (run with -race).
func TestConcurrentReload(t *testing.T) {
	dir := policyDir(t, `
decision := {"allow": true, "tags": [sprintf("req:%s", [data.portcullis.v])]}
response_decision := {"allow": true, "tags": [sprintf("resp:%s", [data.portcullis.v])]}
`, `{"portcullis":{"v":"0"}}`)
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				x := exchange(chatReq)
				if _, err := serve(e, x); err != nil {
					errc <- err
					return
				}
				time.Sleep(50 * time.Microsecond) // a reload may land between the phases
				for _, f := range x.Filters() {
					if _, err := f.Body(x, []byte(`{"choices":[{"message":{"content":"hi"}}]}`)); err != nil {
						errc <- err
						return
					}
				}
				if len(x.Labels) != 2 || strings.TrimPrefix(x.Labels[0], "req:") != strings.TrimPrefix(x.Labels[1], "resp:") {
					errc <- errors.New("phases saw different revisions: " + strings.Join(x.Labels, ","))
					return
				}
			}
		}()
	}
	for i := 1; i <= 20; i++ {
		writeFiles(t, dir, map[string]string{"data.json": `{"portcullis":{"v":"` + string(rune('a'+i)) + `"}}`})
		if err := e.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

func TestEvalAndExplain(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": input.llm.model == "a"}`, "")
	e, _ := newEngine(t, config.PolicySettings{Dir: dir})
	in := ast.MustParseTerm(`{"llm": {"model": "a"}}`).Value
	d, err := e.Eval(context.Background(), in)
	if err != nil || !d.Allow || d.Revision != e.Revision() {
		t.Fatalf("%+v %v", d, err)
	}
	var b strings.Builder
	if _, err := e.Explain(context.Background(), in, &b); err != nil || !strings.Contains(b.String(), "Enter data.gateway.decision") {
		t.Fatalf("trace %q %v", b.String(), err)
	}
	if _, ok, err := e.EvalResponse(context.Background(), in); ok || err != nil {
		t.Fatal("no response decision expected")
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}
