package portcullis

import (
	"encoding/json"
	"reflect"
	"testing"
)

const reqEnv = `{"v":1,"hook":"on_request","id":"gw-1","endpoint":"chat","path":"/v1/chat/completions","model":"gpt-4o",
 "headers":{"x-tier":"premium","x-quote":"a\"b"},"principal":{"key_alias":"ci","team_id":"t1","user_id":"u1"},
 "tags":["eu","batch"],"models":["gpt-4o","gpt-4o-mini"],"prompt_chars":12,"estimated_cost_usd":0.0025,
 "body":{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}]}}`

func TestRequestAccessors(t *testing.T) {
	r := &Request{newEnvelope([]byte(reqEnv))}
	if r.ID() != "gw-1" || r.Endpoint() != "chat" || r.Path() != "/v1/chat/completions" || r.Model() != "gpt-4o" {
		t.Errorf("head: %q %q %q %q", r.ID(), r.Endpoint(), r.Path(), r.Model())
	}
	if v, ok := r.Header("x-tier"); !ok || v != "premium" {
		t.Errorf("header: %q %v", v, ok)
	}
	if v, _ := r.Header("x-quote"); v != `a"b` {
		t.Errorf("escaped header: %q", v)
	}
	if _, ok := r.Header("authorization"); ok {
		t.Error("absent header found")
	}
	if r.KeyAlias() != "ci" || r.TeamID() != "t1" || r.UserID() != "u1" {
		t.Error("principal")
	}
	if !r.HasTag("batch") || r.HasTag("x") || !reflect.DeepEqual(r.Tags(), []string{"eu", "batch"}) {
		t.Error("tags")
	}
	if !r.HasModel("gpt-4o-mini") || r.HasModel("x") || len(r.Models()) != 2 {
		t.Error("models")
	}
	if r.PromptChars() != 12 {
		t.Error("prompt_chars")
	}
	if c, ok := r.EstimatedCostUSD(); !ok || c != 0.0025 {
		t.Errorf("cost %v %v", c, ok)
	}
	if r.Body().Get("messages.0.content").Str != "hello there" {
		t.Errorf("body: %s", r.Body().Raw)
	}
	var env RequestEnvelope
	if err := json.Unmarshal(r.Raw(), &env); err != nil || env.Headers["x-tier"] != "premium" || env.EstimatedCostUSD == nil {
		t.Errorf("typed decode: %v %+v", err, env)
	}
	r2 := &Request{newEnvelope([]byte(`{"v":1,"body":{}}`))}
	if _, ok := r2.EstimatedCostUSD(); ok || r2.PromptChars() != 0 {
		t.Error("absent fields")
	}
}

func TestStreamAccessors(t *testing.T) {
	e := &StreamEvent{newEnvelope([]byte(`{"v":1,"hook":"on_stream_event","index":3,"event":"x","state":"held","data":"[DONE]"}`))}
	if e.Index() != 3 || e.Event() != "x" || e.State() != "held" || !e.Done() {
		t.Errorf("%d %q %q %v", e.Index(), e.Event(), e.State(), e.Done())
	}
	e = &StreamEvent{newEnvelope([]byte(`{"v":1,"hook":"on_stream_event","index":0,"data":{"choices":[{"delta":{"content":"hi"}}]} }`))}
	if e.Data().Get("choices.0.delta.content").Str != "hi" || e.Done() {
		t.Errorf("data: %s", e.Data().Raw)
	}
	end := &StreamEnd{newEnvelope([]byte(`{"v":1,"hook":"on_stream_end","events":7,"complete":true,"state":"s"}`))}
	if end.Events() != 7 || !end.Complete() || end.State() != "s" {
		t.Error("end")
	}
}

func TestResults(t *testing.T) {
	for _, c := range []struct {
		r    *Result
		want string
	}{
		{Route("gpt-4o").Fallbacks("a", "b"), `{"action":"route","route":{"model":"gpt-4o","fallbacks":["a","b"]}}`},
		{Route("m").Deployment("d").Fallbacks(), `{"action":"route","route":{"model":"m","deployment":"d","fallbacks":[]}}`},
		{Reject(451, "", "no \"way\""), `{"action":"reject","reject":{"status":451,"message":"no \"way\""}}`},
		{Respond(200, []byte(`{"id":"x"}`)), `{"action":"respond","respond":{"status":200,"body":{"id":"x"}}}`},
		{Error("bad\n"), `{"action":"error","error":"bad\n"}`},
		{Continue().ReplaceString("/messages/0/content", "[EMAIL]").Remove("/x").Redacted("/messages/0/content", "email", 1).
			Label("pii:email").SetHeader("x-a", "1").RemoveHeader("x-b").State("held").Drop().Insert("", []byte(`"[DONE]"`)).Log("n"),
			`{"action":"continue","set_headers":{"x-a":"1"},"remove_headers":["x-b"],"patch":[{"op":"replace","path":"/messages/0/content","value":"[EMAIL]"},{"op":"remove","path":"/x"}],"drop":true,"insert":[{"data":"[DONE]"}],"redactions":[{"path":"/messages/0/content","kind":"email","count":1}],"labels":["pii:email"],"state":"held","log":"n"}`},
	} {
		got := string(c.r.AppendJSON(nil))
		if got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("invalid JSON: %s", got)
		}
	}
}

func TestDispatch(t *testing.T) {
	defer func() { onConfig, onRequest, onStreamEvent = nil, nil, nil }()
	OnConfig(func(cfg []byte) error { return nil })
	OnRequest(func(r *Request) *Result {
		if r.HasTag("boom") {
			panic("boom")
		}
		if r.HasTag("batch") {
			return Route("gpt-4o-mini")
		}
		return nil
	})
	if got := string(Dispatch(HookConfig, []byte(`{"a":1}`))); got != `{"hooks":["on_request"]}` || string(Config()) != `{"a":1}` {
		t.Errorf("on_config: %s", got)
	}
	if got := string(Dispatch(HookRequest, []byte(reqEnv))); got != `{"action":"route","route":{"model":"gpt-4o-mini"}}` {
		t.Errorf("on_request: %s", got)
	}
	if got := Dispatch(HookRequest, []byte(`{"v":1,"tags":[],"body":{}}`)); got != nil {
		t.Errorf("continue: %s", got)
	}
	if got := string(Dispatch(HookRequest, []byte(`{"v":1,"tags":["boom"],"body":{}}`))); got != `{"action":"error","error":"panic: boom"}` {
		t.Errorf("panic: %s", got)
	}
	if got := Dispatch(HookStreamEvent, []byte(`{"v":1}`)); got != nil {
		t.Errorf("unregistered hook: %s", got)
	}
}
