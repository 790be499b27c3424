package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

const responsePolicy = `
decision := {"allow": true}

response_decision := {"allow": false, "status": 502, "reasons": [{"code": "leak", "status": 502, "message": "output stopped"}],
	"tags": [sprintf("w%d", [input.response.window])]} if {
	contains(input.response.text, "SECRET")
} else := {"allow": true, "tags": [sprintf("w%d", [input.response.window])],
	"headers": {"x-checked": sprintf("%v", [input.response.final])}}
`

// respExchange runs the request phase and returns the exchange with the
// response filter registered.
func respExchange(t *testing.T, e *Engine, d llm.Dialect) *pipeline.Exchange {
	t.Helper()
	x := exchange(chatReq)
	x.Dialect = d
	x.Provider, x.DeploymentID = "openai", "dep-1"
	if _, err := serve(e, x); err != nil {
		t.Fatal(err)
	}
	if len(x.Filters()) != 1 {
		t.Fatalf("%d filters", len(x.Filters()))
	}
	return x
}

func TestResponseBody(t *testing.T) {
	e, _ := newEngine(t, config.PolicySettings{Dir: policyDir(t, responsePolicy, "")})
	x := respExchange(t, e, llm.OpenAIChat)
	f := x.Filters()[0]
	body := []byte(`{"choices":[{"message":{"content":"all fine"}}]}`)
	out, err := f.Body(x, body)
	if err != nil || string(out) != string(body) {
		t.Fatalf("%s %v", out, err)
	}
	if len(x.ResponseSet) != 1 || x.ResponseSet[0] != [2]string{"x-checked", "true"} || x.Labels[0] != "w0" {
		t.Fatalf("headers %v labels %v", x.ResponseSet, x.Labels)
	}

	x = respExchange(t, e, llm.AnthropicMessages)
	_, err = x.Filters()[0].Body(x, []byte(`{"content":[{"type":"text","text":"the SECRET is"}]}`))
	if ee := errCode(t, err); ee.Status != 502 || ee.Code != "leak" || ee.Type != TypePolicyViolation {
		t.Fatalf("%+v", ee)
	}
}

func TestResponseStreamWindows(t *testing.T) {
	e, _ := newEngine(t, config.PolicySettings{Dir: policyDir(t, responsePolicy, ""), StreamWindow: 16})
	x := respExchange(t, e, llm.OpenAIChat)
	f := x.Filters()[0]
	var got []string
	emit := func(name, data []byte) error { got = append(got, string(data)); return nil }
	chunk := func(s string) []byte {
		return []byte(fmt.Sprintf(`{"choices":[{"delta":{"content":%q}}]}`, s))
	}
	// 10 bytes: held back.
	if err := f.Event(x, nil, chunk("0123456789"), emit); err != nil || len(got) != 0 {
		t.Fatalf("first event passed through: %v %v", got, err)
	}
	// 20 bytes: the window is checked and both events pass.
	if err := f.Event(x, nil, chunk("abcdefghij"), emit); err != nil || len(got) != 2 {
		t.Fatalf("window not flushed: %v %v", got, err)
	}
	if err := f.Event(x, nil, chunk("tail"), emit); err != nil || len(got) != 2 {
		t.Fatal(err)
	}
	// The terminal event: the last window is checked, everything flushed.
	if err := f.Event(x, nil, []byte("[DONE]"), emit); err != nil || len(got) != 4 || got[3] != "[DONE]" {
		t.Fatalf("%v %v", got, err)
	}
	if err := f.End(x, true, emit); err != nil || len(got) != 4 {
		t.Fatal("End re-emitted")
	}
	if strings.Join(x.Labels, ",") != "w0,w1" {
		t.Fatalf("labels %v", x.Labels)
	}
	if len(x.ResponseSet) != 0 {
		t.Fatal("a stream's headers are already sent")
	}
}

func TestResponseStreamDeniedMidStream(t *testing.T) {
	e, _ := newEngine(t, config.PolicySettings{Dir: policyDir(t, responsePolicy, ""), StreamWindow: 16})
	x := respExchange(t, e, llm.AnthropicMessages)
	f := x.Filters()[0]
	var got []string
	emit := func(name, data []byte) error { got = append(got, string(name)); return nil }
	delta := func(s string) []byte {
		return []byte(fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`, s))
	}
	if err := f.Event(x, []byte("message_start"), []byte(`{}`), emit); err != nil {
		t.Fatal(err)
	}
	if err := f.Event(x, []byte("content_block_delta"), delta("here it comes: SECR"), emit); err != nil || len(got) != 2 {
		t.Fatalf("%v %v", got, err)
	}
	// "SECRET" spans two windows: the overlap catches it.
	err := f.Event(x, []byte("content_block_delta"), delta("ET and more text past the window"), emit)
	if ee := errCode(t, err); ee.Code != "leak" {
		t.Fatalf("%+v", ee)
	}
	if len(got) != 2 {
		t.Fatalf("denied text reached the client: %v", got)
	}
}

func TestResponseStreamEndWithoutTerminal(t *testing.T) {
	e, _ := newEngine(t, config.PolicySettings{Dir: policyDir(t, responsePolicy, ""), StreamWindow: 1 << 10})
	x := respExchange(t, e, llm.OpenAICompletion)
	f := x.Filters()[0]
	var got int
	emit := func(name, data []byte) error { got++; return nil }
	if err := f.Event(x, nil, []byte(`{"choices":[{"text":"short"}]}`), emit); err != nil || got != 0 {
		t.Fatal(err)
	}
	if err := f.End(x, true, emit); err != nil || got != 1 {
		t.Fatalf("End did not flush: %d %v", got, err)
	}
	// A cut stream drops what is held.
	x = respExchange(t, e, llm.OpenAICompletion)
	f = x.Filters()[0]
	got = 0
	_ = f.Event(x, nil, []byte(`{"choices":[{"text":"short"}]}`), emit)
	if err := f.End(x, false, emit); err != nil || got != 0 {
		t.Fatal("a cut stream flushed")
	}
}

func TestResponsePhaseSkipped(t *testing.T) {
	// Shipped policies without response rules configured: no filter.
	e, _ := newEngine(t, config.PolicySettings{Dir: shippedCopy(t, false, nil), SkipTests: true})
	x := exchange(chatReq)
	if _, err := serve(e, x); err != nil {
		t.Fatal(err)
	}
	if len(x.Filters()) != 0 || e.Status().Response {
		t.Fatal("response phase active without response rules")
	}
	e2, _ := newEngine(t, config.PolicySettings{Dir: shippedCopy(t, false, map[string]any{"portcullis": map[string]any{
		"pii": map[string]any{"response_actions": map[string]any{"secret": "deny"}}}}), SkipTests: true})
	if !e2.Status().Response {
		t.Fatal("response phase not active with response rules")
	}
}
