package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
)

// wantErr checks that err is an *errs.Error with the given status, code and
// param.
func wantErr(t *testing.T, err error, status int, code errs.Code, param string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", code)
	}
	e, ok := err.(*errs.Error)
	if !ok {
		t.Fatalf("error %v is %T, want *errs.Error", err, err)
	}
	if e.Status != status || e.Code != code || e.Param != param {
		t.Errorf("got status=%d code=%s param=%q (%s), want %d %s %q", e.Status, e.Code, e.Param, e.Message, status, code, param)
	}
}

func TestDecodeChatErrors(t *testing.T) {
	cases := []struct {
		name, body string
		code       errs.Code
		param      string
	}{
		{"empty", ``, errs.CodeInvalidJSON, ""},
		{"truncated", `{"model":"gpt-4o","messages":[`, errs.CodeInvalidJSON, ""},
		{"not json", `model=gpt-4o`, errs.CodeInvalidJSON, ""},
		{"array body", `[]`, errs.CodeInvalidRequest, ""},
		{"messages string", `{"model":"m","messages":"hi"}`, errs.CodeInvalidRequest, "messages"},
		{"no messages", `{"model":"m"}`, errs.CodeInvalidRequest, "messages"},
		{"content number", `{"model":"m","messages":[{"role":"user","content":5}]}`, errs.CodeInvalidRequest, "messages.content"},
		{"part text number", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}`, errs.CodeInvalidRequest, "messages.content.text"},
		{"temperature string", `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, errs.CodeInvalidRequest, "temperature"},
		{"max_tokens float", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}`, errs.CodeInvalidRequest, "max_tokens"},
		{"stop object", `{"model":"m","messages":[{"role":"user","content":"x"}],"stop":{}}`, errs.CodeInvalidRequest, "stop"},
		{"bad role", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"robot","content":"x"}]}`, errs.CodeInvalidRequest, "messages[1].role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeChat([]byte(c.body))
			wantErr(t, err, 400, c.code, c.param)
		})
	}
	_, err := DecodeChat([]byte(`{"model":"m","messages":[{"role":"user","content":5}]}`))
	if msg := err.(*errs.Error).Message; !strings.Contains(msg, "a string or an array") {
		t.Errorf("message %q should name both accepted forms", msg)
	}
}

func TestAnthropicToChatErrors(t *testing.T) {
	const user = `{"role":"user","content":"hi"}`
	cases := []struct {
		name, body string
		code       errs.Code
		param      string
	}{
		{"empty", ` `, errs.CodeInvalidJSON, ""},
		{"garbage", `{"model":`, errs.CodeInvalidJSON, ""},
		{"no messages", `{"model":"c","max_tokens":5,"messages":[]}`, errs.CodeInvalidRequest, "messages"},
		{"content number", `{"model":"c","messages":[{"role":"user","content":5}]}`, errs.CodeInvalidRequest, "messages.content"},
		{"system object", `{"model":"c","system":{},"messages":[` + user + `]}`, errs.CodeInvalidRequest, "system"},
		{"system image", `{"model":"c","system":[{"type":"image"}],"messages":[` + user + `]}`, errs.CodeInvalidRequest, "system[0].type"},
		{"max_tokens string", `{"model":"c","max_tokens":"5","messages":[` + user + `]}`, errs.CodeInvalidRequest, "max_tokens"},
		{"role system", `{"model":"c","messages":[{"role":"system","content":"x"}]}`, errs.CodeInvalidRequest, "messages[0].role"},
		{"document block", `{"model":"c","messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}}]}]}`, errs.CodeUnsupported, "messages[0].content[0]"},
		{"image no source", `{"model":"c","messages":[{"role":"user","content":[{"type":"image"}]}]}`, errs.CodeInvalidRequest, "messages[0].content[0].source"},
		{"image file source", `{"model":"c","messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"file_1"}}]}]}`, errs.CodeUnsupported, "messages[0].content[0].source.type"},
		{"server tool", `{"model":"c","messages":[` + user + `],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, errs.CodeUnsupported, "tools[0].type"},
		{"tool without name", `{"model":"c","messages":[` + user + `],"tools":[{"input_schema":{}}]}`, errs.CodeInvalidRequest, "tools[0].name"},
		{"tool_choice tool without name", `{"model":"c","messages":[` + user + `],"tools":[{"name":"t","input_schema":{}}],"tool_choice":{"type":"tool"}}`, errs.CodeInvalidRequest, "tool_choice.name"},
		{"tool_choice unknown", `{"model":"c","messages":[` + user + `],"tools":[{"name":"t","input_schema":{}}],"tool_choice":{"type":"maybe"}}`, errs.CodeInvalidRequest, "tool_choice.type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := AnthropicToChat([]byte(c.body))
			wantErr(t, err, 400, c.code, c.param)
		})
	}
}

func decodeChat(t *testing.T, body string) *llm.ChatRequest {
	t.Helper()
	req, err := DecodeChat([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestChatToAnthropicErrors(t *testing.T) {
	cases := []struct {
		name, body string
		code       errs.Code
		param      string
	}{
		{"n", `{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}`, errs.CodeUnsupported, "n"},
		{"audio", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}`, errs.CodeUnsupported, "messages[0].content[0].type"},
		{"file part", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}`, errs.CodeUnsupported, "messages[0].content[0].type"},
		{"ftp image", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}`, errs.CodeInvalidRequest, "messages[0].content[0].image_url.url"},
		{"data url not base64", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}`, errs.CodeInvalidRequest, "messages[0].content[0].image_url.url"},
		{"image without url", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, errs.CodeInvalidRequest, "messages[0].content[0].image_url.url"},
		{"function role", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"function","name":"f","content":"1"}]}`, errs.CodeUnsupported, "messages[1].role"},
		{"only system", `{"model":"m","messages":[{"role":"system","content":"x"}]}`, errs.CodeInvalidRequest, "messages"},
		{"tool_choice bogus", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"sometimes"}`, errs.CodeInvalidRequest, "tool_choice"},
		{"custom tool", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","function":{"name":"f"}}]}`, errs.CodeUnsupported, "tools[0].type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ChatToAnthropic(decodeChat(t, c.body), "claude")
			wantErr(t, err, 400, c.code, c.param)
		})
	}
	_, err := ChatToAnthropic(nil, "claude")
	wantErr(t, err, 400, errs.CodeInvalidRequest, "")
}

// anth encodes body for Anthropic and returns it parsed generically.
func anth(t *testing.T, body, model string) map[string]any {
	t.Helper()
	out, err := ChatToAnthropic(decodeChat(t, body), model)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestChatToAnthropicMapping(t *testing.T) {
	const u = `{"role":"user","content":"x"}`
	const tool = `"tools":[{"type":"function","function":{"name":"f"}}]`
	cases := []struct {
		name, body, model string
		key               string
		want              string // JSON of m[key]; "" means absent
	}{
		{"model override", `{"model":"gpt-4o","messages":[` + u + `]}`, "claude-3", "model", `"claude-3"`},
		{"model kept", `{"model":"claude-x","messages":[` + u + `]}`, "", "model", `"claude-x"`},
		{"default max_tokens", `{"model":"m","messages":[` + u + `]}`, "", "max_tokens", `4096`},
		{"max_tokens", `{"model":"m","max_tokens":10,"messages":[` + u + `]}`, "", "max_tokens", `10`},
		{"max_completion_tokens wins", `{"model":"m","max_tokens":10,"max_completion_tokens":20,"messages":[` + u + `]}`, "", "max_tokens", `20`},
		{"temperature clamped", `{"model":"m","temperature":2,"messages":[` + u + `]}`, "", "temperature", `1`},
		{"temperature kept", `{"model":"m","temperature":0.3,"messages":[` + u + `]}`, "", "temperature", `0.3`},
		{"stop string", `{"model":"m","stop":"END","messages":[` + u + `]}`, "", "stop_sequences", `["END"]`},
		{"user", `{"model":"m","user":"u1","messages":[` + u + `]}`, "", "metadata", `{"user_id":"u1"}`},
		{"n=1 ok", `{"model":"m","n":1,"messages":[` + u + `]}`, "", "model", `"m"`},
		{"tool_choice auto", `{"model":"m","messages":[` + u + `],` + tool + `,"tool_choice":"auto"}`, "", "tool_choice", `{"type":"auto"}`},
		{"tool_choice none", `{"model":"m","messages":[` + u + `],` + tool + `,"tool_choice":"none"}`, "", "tool_choice", `{"type":"none"}`},
		{"tool_choice required", `{"model":"m","messages":[` + u + `],` + tool + `,"tool_choice":"required"}`, "", "tool_choice", `{"type":"any"}`},
		{"tool_choice named", `{"model":"m","messages":[` + u + `],` + tool + `,"tool_choice":{"type":"function","function":{"name":"f"}}}`, "", "tool_choice", `{"name":"f","type":"tool"}`},
		{"parallel off", `{"model":"m","messages":[` + u + `],` + tool + `,"parallel_tool_calls":false}`, "", "tool_choice", `{"disable_parallel_tool_use":true,"type":"auto"}`},
		{"parallel on", `{"model":"m","messages":[` + u + `],` + tool + `,"parallel_tool_calls":true}`, "", "tool_choice", ``},
		{"tool_choice without tools dropped", `{"model":"m","messages":[` + u + `],"tool_choice":"required"}`, "", "tool_choice", ``},
		{"thinking", `{"model":"m","messages":[` + u + `],"reasoning_effort":"high","temperature":0.5}`, "", "thinking", `{"budget_tokens":4096,"type":"enabled"}`},
		{"thinking drops temperature", `{"model":"m","messages":[` + u + `],"reasoning_effort":"high","temperature":0.5}`, "", "temperature", ``},
		{"thinking raises max_tokens", `{"model":"m","max_tokens":100,"messages":[` + u + `],"reasoning_effort":"low"}`, "", "max_tokens", `1124`},
		{"forced tool disables thinking", `{"model":"m","messages":[` + u + `],` + tool + `,"tool_choice":"required","reasoning_effort":"high"}`, "", "thinking", ``},
		{"tool loop disables thinking", `{"model":"m","messages":[` + u + `,{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"1"}],` + tool + `,"reasoning_effort":"high"}`, "", "thinking", ``},
		{"system parts joined", `{"model":"m","messages":[{"role":"system","content":"a"},` + u + `,{"role":"developer","content":[{"type":"text","text":"b"}]}]}`, "", "system", `"a\n\nb"`},
		{"merged users", `{"model":"m","messages":[` + u + `,` + u + `]}`, "", "messages", `[{"content":[{"text":"x","type":"text"},{"text":"x","type":"text"}],"role":"user"}]`},
		{"empty assistant dropped", `{"model":"m","messages":[` + u + `,{"role":"assistant","content":""},` + u + `]}`, "", "messages", `[{"content":[{"text":"x","type":"text"},{"text":"x","type":"text"}],"role":"user"}]`},
		{"tool result moved first", `{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]},` + u + `,{"role":"tool","tool_call_id":"c1","content":""}]}`, "",
			"messages", `[{"content":[{"id":"c1","input":{},"name":"f","type":"tool_use"}],"role":"assistant"},{"content":[{"tool_use_id":"c1","type":"tool_result"},{"text":"x","type":"text"}],"role":"user"}]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := anth(t, c.body, c.model)
			v, ok := m[c.key]
			if c.want == "" {
				if ok {
					t.Errorf("%s = %v, want absent", c.key, v)
				}
				return
			}
			got, _ := json.Marshal(v)
			if string(got) != c.want {
				t.Errorf("%s = %s, want %s", c.key, got, c.want)
			}
		})
	}
}

func TestChatToAnthropicDoesNotMutate(t *testing.T) {
	body := `{"model":"m","temperature":2,"reasoning_effort":"high","messages":[{"role":"user","content":"x"},{"role":"user","content":"y"}]}`
	req := decodeChat(t, body)
	before, _ := json.Marshal(req)
	if _, err := ChatToAnthropic(req, "other"); err != nil {
		t.Fatal(err)
	}
	after, _ := json.Marshal(req)
	if !bytes.Equal(before, after) {
		t.Errorf("request changed:\n%s\n%s", before, after)
	}
}

func TestAnthropicToChatMapping(t *testing.T) {
	req, err := AnthropicToChat([]byte(`{"model":"c","max_tokens":9,"messages":[
		{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"a"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]}]},
		{"role":"assistant","content":[{"type":"tool_use","id":"t2","name":"f"}]},
		{"role":"assistant","content":[{"type":"text","text":"A"},{"type":"text","text":"B"}]}],
		"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"none","disable_parallel_tool_use":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(req)
	want := `{"model":"c","messages":[{"role":"tool","content":"a","tool_call_id":"t1"},{"role":"assistant","content":null,"tool_calls":[{"id":"t2","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"assistant","content":"AB"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"none","max_tokens":9}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Without tools, tool_choice is dropped (OpenAI rejects it alone).
	req, err = AnthropicToChat([]byte(`{"model":"c","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"any"}}`))
	if err != nil || req.ToolChoice != nil || req.ParallelToolCalls != nil {
		t.Errorf("tool_choice without tools: %v %s", err, req.ToolChoice)
	}
}

func TestCompletionToChat(t *testing.T) {
	cases := []struct {
		name, body string
		code       errs.Code
		param      string
		prompt     string
	}{
		{"string", `{"model":"i","prompt":"Say hi","logprobs":3,"max_tokens":5}`, "", "", "Say hi"},
		{"one string", `{"model":"i","prompt":["Say hi"]}`, "", "", "Say hi"},
		{"missing", `{"model":"i"}`, errs.CodeInvalidRequest, "prompt", ""},
		{"empty array", `{"model":"i","prompt":[]}`, errs.CodeInvalidRequest, "prompt", ""},
		{"number", `{"model":"i","prompt":5}`, errs.CodeInvalidRequest, "prompt", ""},
		{"tokens", `{"model":"i","prompt":[1212,318]}`, errs.CodeUnsupported, "prompt", ""},
		{"token batch", `{"model":"i","prompt":[[1212,318]]}`, errs.CodeUnsupported, "prompt", ""},
		{"two prompts", `{"model":"i","prompt":["a","b"]}`, errs.CodeUnsupported, "prompt", ""},
		{"echo", `{"model":"i","prompt":"a","echo":true}`, errs.CodeUnsupported, "echo", ""},
		{"suffix", `{"model":"i","prompt":"a","suffix":"z"}`, errs.CodeUnsupported, "suffix", ""},
		{"bad type", `{"model":"i","prompt":"a","max_tokens":"5"}`, errs.CodeInvalidRequest, "max_tokens", ""},
		{"not json", `{`, errs.CodeInvalidJSON, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := CompletionToChat([]byte(c.body))
			if c.code != "" {
				wantErr(t, err, 400, c.code, c.param)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(req.Messages) != 1 || req.Messages[0].Role != "user" || req.Messages[0].Content.String() != c.prompt {
				t.Errorf("messages = %+v", req.Messages)
			}
		})
	}
}

func TestResponseErrors(t *testing.T) {
	cases := []struct {
		name   string
		fn     func([]byte, string) ([]byte, llm.Tokens, error)
		body   string
		status int
		code   errs.Code
	}{
		{"anthropic overloaded", AnthropicResponseToChat, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 529, errs.CodeUpstream},
		{"anthropic invalid", AnthropicResponseToChat, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`, 400, errs.CodeUpstream},
		{"anthropic garbage", AnthropicResponseToChat, `<html>502</html>`, 502, errs.CodeUpstreamProtocol},
		{"anthropic wrong shape", AnthropicResponseToChat, `{"content":"x"}`, 502, errs.CodeUpstreamProtocol},
		{"openai rate limit", ChatResponseToAnthropic, `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, 429, errs.CodeUpstream},
		{"openai numeric code", ChatResponseToAnthropic, `{"error":{"message":"boom","code":503}}`, 503, errs.CodeUpstream},
		{"openai garbage", ChatResponseToAnthropic, `{"choices":5}`, 502, errs.CodeUpstreamProtocol},
		{"completion error", ChatResponseToCompletion, `{"error":{"message":"bad","type":"invalid_request_error"}}`, 400, errs.CodeUpstream},
		{"completion garbage", ChatResponseToCompletion, ``, 502, errs.CodeUpstreamProtocol},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := c.fn([]byte(c.body), "m")
			e, ok := err.(*errs.Error)
			if !ok {
				t.Fatalf("error %v is %T", err, err)
			}
			if e.Status != c.status || e.Code != c.code {
				t.Errorf("got %d %s (%s), want %d %s", e.Status, e.Code, e.Message, c.status, c.code)
			}
		})
	}
}

func TestResponseModelOverride(t *testing.T) {
	body, _, err := AnthropicResponseToChat([]byte(`{"id":"msg_1","type":"message","model":"claude-x","content":[{"type":"tool_use","id":"t","name":"f","input":null}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}`), "alias")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte(`"model":"alias"`)) || !bytes.Contains(body, []byte(`"content":null`)) || !bytes.Contains(body, []byte(`"arguments":"{}"`)) {
		t.Errorf("body %s", body)
	}
	body, _, err = ChatResponseToAnthropic([]byte(`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt","choices":[]}`), "alias")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"chatcmpl-1","type":"message","role":"assistant","model":"alias","content":[],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}`; string(body) != want {
		t.Errorf("got  %s\nwant %s", body, want)
	}
}

func TestStopReasons(t *testing.T) {
	for in, want := range map[string]string{
		"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "": "stop",
		"max_tokens": "length", "model_context_window_exceeded": "length",
		"tool_use": "tool_calls", "refusal": "content_filter",
	} {
		if got := finishFromAnthropic(in); got != want {
			t.Errorf("finishFromAnthropic(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"stop": "end_turn", "": "end_turn", "length": "max_tokens",
		"tool_calls": "tool_use", "function_call": "tool_use", "content_filter": "refusal",
	} {
		if got := stopFromOpenAI(in); got != want {
			t.Errorf("stopFromOpenAI(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUsageConversion(t *testing.T) {
	a := anthUsage{InputTokens: 50, CacheReadInputTokens: 1800, CacheCreationInputTokens: 248, OutputTokens: 73}
	tok := a.tokens()
	if tok != (llm.Tokens{Prompt: 2098, Completion: 73, CachedRead: 1800, CacheWrite: 248}) {
		t.Errorf("tokens %+v", tok)
	}
	if back := anthropicUsage(tok); back != a {
		t.Errorf("round trip %+v", back)
	}
	if got := anthropicUsage(llm.Tokens{Prompt: 5, CachedRead: 9}); got.InputTokens != 0 {
		t.Errorf("negative input not clamped: %+v", got)
	}
}

func TestUsageFromBody(t *testing.T) {
	cases := []struct {
		name string
		d    llm.Dialect
		body string
		want llm.Tokens
		ok   bool
	}{
		{"chat", llm.OpenAIChat, `{"id":"x","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}`, llm.Tokens{Prompt: 19, Completion: 10, CachedRead: 4, Reasoning: 3}, true},
		{"completion", llm.OpenAICompletion, `{"object":"text_completion","usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`, llm.Tokens{Prompt: 5, Completion: 7}, true},
		{"embedding", llm.OpenAIEmbedding, `{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`, llm.Tokens{Prompt: 8}, true},
		{"anthropic", llm.AnthropicMessages, `{"type":"message","usage":{"input_tokens":10,"cache_read_input_tokens":20,"cache_creation_input_tokens":30,"output_tokens":5}}`, llm.Tokens{Prompt: 60, Completion: 5, CachedRead: 20, CacheWrite: 30}, true},
		{"none", llm.OpenAIChat, `{"choices":[]}`, llm.Tokens{}, false},
		{"null", llm.OpenAIChat, `{"usage":null}`, llm.Tokens{}, false},
		{"garbage", llm.AnthropicMessages, `{{{`, llm.Tokens{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := UsageFromBody(c.d, []byte(c.body))
			if got != c.want || ok != c.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func events(t testing.TB, path string) []sse.Event {
	t.Helper()
	r := sse.NewReader(bytes.NewReader(read(t, path)), 0)
	var out []sse.Event
	for {
		ev, err := r.Next()
		if err != nil {
			return out
		}
		out = append(out, sse.Event{Name: bytes.Clone(ev.Name), Data: bytes.Clone(ev.Data)})
	}
}

func TestUsageMeter(t *testing.T) {
	cases := []struct {
		d    llm.Dialect
		path string
		want llm.Tokens
	}{
		{llm.AnthropicMessages, "testdata/anthropic_stream/text.sse", llm.Tokens{Prompt: 2073, Completion: 15, CachedRead: 2048}},
		{llm.AnthropicMessages, "testdata/anthropic_stream/thinking.sse", llm.Tokens{Prompt: 1546, Completion: 120, CacheWrite: 1500}},
		{llm.OpenAIChat, "testdata/chat_stream/text_usage.sse", llm.Tokens{Prompt: 1200, Completion: 11, CachedRead: 1024}},
		{llm.OpenAIChat, "testdata/chat_stream/reasoning.sse", llm.Tokens{Prompt: 13, Completion: 16, Reasoning: 8}},
	}
	for _, c := range cases {
		var m UsageMeter
		for _, ev := range events(t, c.path) {
			m.Observe(c.d, ev)
		}
		if got, ok := m.Tokens(); !ok || got != c.want {
			t.Errorf("%s: got %+v %v, want %+v", c.path, got, ok, c.want)
		}
	}
	var m UsageMeter
	for _, ev := range events(t, "testdata/chat_stream/tool.sse") {
		m.Observe(llm.OpenAIChat, ev)
	}
	if _, ok := m.Tokens(); ok {
		t.Error("usage reported for a stream without usage")
	}
	// message_delta carrying updated input counts (newer API versions).
	m = UsageMeter{}
	m.Observe(llm.AnthropicMessages, sse.Event{Data: []byte(`{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}`)})
	m.Observe(llm.AnthropicMessages, sse.Event{Data: []byte(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":12,"cache_read_input_tokens":5,"output_tokens":30}}`)})
	if got, _ := m.Tokens(); got != (llm.Tokens{Prompt: 17, Completion: 30, CachedRead: 5}) {
		t.Errorf("delta usage: %+v", got)
	}
}

func TestUsageMeterAllocs(t *testing.T) {
	var m UsageMeter
	text := sse.Event{Name: []byte("content_block_delta"), Data: []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, usage is fine"}}`)}
	chunk := sse.Event{Data: []byte(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}`)}
	usage := sse.Event{Data: []byte(`{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`)}
	if n := testing.AllocsPerRun(100, func() {
		m.Observe(llm.AnthropicMessages, text)
		m.Observe(llm.OpenAIChat, chunk)
	}); n != 0 {
		t.Errorf("Observe without usage: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { m.Observe(llm.OpenAIChat, usage) }); n != 0 {
		t.Errorf("Observe with usage: %v allocs, want 0", n)
	}
}

// collect runs events through tr and returns the emitted events.
func collect(t *testing.T, tr StreamTranslator, evs ...sse.Event) ([]sse.Event, error) {
	t.Helper()
	var out []sse.Event
	for _, ev := range evs {
		err := tr.Event(ev, func(name, data []byte) error {
			out = append(out, sse.Event{Name: bytes.Clone(name), Data: bytes.Clone(data)})
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func TestAnthropicStreamWithoutUsage(t *testing.T) {
	tr := NewAnthropicToChatStream("alias", false)
	out, err := collect(t, tr, events(t, "testdata/anthropic_stream/text.sse")...)
	if err != nil {
		t.Fatal(err)
	}
	last := out[len(out)-1]
	if string(last.Data) != "[DONE]" || len(last.Name) != 0 {
		t.Errorf("last event %q %q", last.Name, last.Data)
	}
	for _, ev := range out[:len(out)-1] {
		if bytes.Contains(ev.Data, []byte(`"usage"`)) || !bytes.Contains(ev.Data, []byte(`"model":"alias"`)) {
			t.Errorf("unexpected chunk %s", ev.Data)
		}
	}
	if !tr.Done() || tr.Usage().Completion != 15 {
		t.Errorf("done=%v usage=%+v", tr.Done(), tr.Usage())
	}
	// Events after message_stop are ignored.
	if more, _ := collect(t, tr, sse.Event{Data: []byte(`{"type":"message_stop"}`)}); len(more) != 0 {
		t.Errorf("emitted after done: %d", len(more))
	}
}

func TestStreamErrors(t *testing.T) {
	cases := []struct {
		name   string
		tr     StreamTranslator
		ev     sse.Event
		status int
	}{
		{"anthropic overloaded", NewAnthropicToChatStream("", true), sse.Event{Name: []byte("error"), Data: []byte(`{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`)}, 529},
		{"anthropic unnamed", NewAnthropicToChatStream("", true), sse.Event{Data: []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`)}, 429},
		{"anthropic api", NewAnthropicToChatStream("", true), sse.Event{Name: []byte("error"), Data: []byte(`{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`)}, 500},
		{"anthropic unknown", NewAnthropicToChatStream("", true), sse.Event{Name: []byte("error"), Data: []byte(`not json`)}, 502},
		{"openai server", NewChatToAnthropicStream(""), sse.Event{Data: []byte(`{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`)}, 500},
		{"openai invalid", NewChatToAnthropicStream(""), sse.Event{Data: []byte(`{"error":{"message":"bad","type":"invalid_request_error"}}`)}, 400},
		{"openai string", NewChatToAnthropicStream(""), sse.Event{Data: []byte(`{"error":"boom"}`)}, 502},
		{"completion", NewChatToCompletionStream(""), sse.Event{Data: []byte(`{"error":{"message":"quota","type":"insufficient_quota"}}`)}, 429},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := collect(t, c.tr, c.ev)
			if len(out) != 0 {
				t.Errorf("error event emitted %d events", len(out))
			}
			wantErr(t, err, c.status, errs.CodeUpstream, "")
		})
	}
}

func TestEmitErrorPropagates(t *testing.T) {
	boom := errors.New("client gone")
	emit := func(name, data []byte) error { return boom }
	for _, c := range []struct {
		tr StreamTranslator
		ev string
	}{
		{NewAnthropicToChatStream("", true), "testdata/anthropic_stream/text.sse"},
		{NewChatToAnthropicStream(""), "testdata/chat_stream/text_usage.sse"},
		{NewChatToCompletionStream(""), "testdata/chat_stream/text_usage.sse"},
	} {
		var err error
		for _, ev := range events(t, c.ev) {
			if err = c.tr.Event(ev, emit); err != nil {
				break
			}
		}
		if err != boom {
			t.Errorf("%T: got %v", c.tr, err)
		}
	}
}

func TestChatToAnthropicStreamEdges(t *testing.T) {
	// [DONE] alone still yields a well-formed message.
	out, err := collect(t, NewChatToAnthropicStream("m"), sse.Event{Data: []byte("[DONE]")})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ev := range out {
		names = append(names, string(ev.Name))
	}
	if got := strings.Join(names, ","); got != "message_start,message_delta,message_stop" {
		t.Errorf("events %s", got)
	}

	// A tool call whose first delta has no id gets one; a call
	// without finish_reason still ends as tool_use.
	tr := NewChatToAnthropicStream("")
	out, err = collect(t, tr,
		sse.Event{Data: []byte(`{"id":"x","model":"local","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}}]}`)},
		sse.Event{Data: []byte(`{"id":"x","model":"local","choices":[{"index":1,"delta":{"content":"ignored: choice 1"}}]}`)},
		sse.Event{Data: []byte(`[DONE]`)},
	)
	if err != nil {
		t.Fatal(err)
	}
	joined := string(bytes.Join(func() [][]byte {
		var d [][]byte
		for _, ev := range out {
			d = append(d, ev.Data)
		}
		return d
	}(), []byte("\n")))
	for _, want := range []string{`"id":"toolu_0","name":"f"`, `"partial_json":"{}"`, `"stop_reason":"tool_use"`} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing %s in\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "ignored") {
		t.Errorf("choice 1 translated:\n%s", joined)
	}
}

func TestAnthropicStreamTextAllocs(t *testing.T) {
	tr := NewAnthropicToChatStream("", true)
	emit := func(name, data []byte) error { return nil }
	for _, ev := range events(t, "testdata/anthropic_stream/tool.sse")[:8] {
		if err := tr.Event(ev, emit); err != nil {
			t.Fatal(err)
		}
	}
	text := sse.Event{Name: []byte("content_block_delta"), Data: []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"more \"text\"\n"}}`)}
	args := sse.Event{Name: []byte("content_block_delta"), Data: []byte(`{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 1"}}`)}
	if n := testing.AllocsPerRun(100, func() {
		_ = tr.Event(text, emit)
		_ = tr.Event(args, emit)
	}); n != 0 {
		t.Errorf("delta events: %v allocs, want 0", n)
	}
}

func TestChatStreamTextAllocs(t *testing.T) {
	tr := NewChatToAnthropicStream("")
	emit := func(name, data []byte) error { return nil }
	first := events(t, "testdata/chat_stream/text_usage.sse")
	for _, ev := range first[:2] {
		if err := tr.Event(ev, emit); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = tr.Event(first[2], emit) }); n != 0 {
		t.Errorf("text chunk: %v allocs, want 0", n)
	}
}

func TestRegisteredDecoders(t *testing.T) {
	for _, c := range []struct {
		d    llm.Dialect
		body string
	}{
		{llm.OpenAIChat, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`},
		{llm.AnthropicMessages, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`},
		{llm.OpenAICompletion, `{"model":"m","prompt":"hi"}`},
	} {
		r := &provider.Request{Dialect: c.d, Body: []byte(c.body)}
		req, err := r.Chat()
		if err != nil || req.Messages[len(req.Messages)-1].Content.String() != "hi" {
			t.Errorf("%s: %v %+v", c.d, err, req)
		}
	}
}

func TestObjectField(t *testing.T) {
	cases := []struct {
		obj, key, want string
		ok             bool
	}{
		{`{"type":"text_delta","text":"a\"b\\"}`, "text", `"a\"b\\"`, true},
		{` { "a" : [1,{"text":"x"}] , "text" : "y" } `, "text", `"y"`, true},
		{`{"a":{"b":"}"},"text":5}`, "text", `5`, true},
		{`{"a":1}`, "text", ``, false},
		{`{}`, "text", ``, false},
		{`{"text"`, "text", ``, false},
		{`{"text":"unterminated`, "text", ``, false},
		{`{"a":[1,2,"text"`, "text", ``, false},
		{`{"a":1 "text":2}`, "text", ``, false},
		{`[1]`, "text", ``, false},
		{``, "text", ``, false},
	}
	for _, c := range cases {
		got, ok := objectField(c.obj, c.key)
		if got != c.want || ok != c.ok {
			t.Errorf("objectField(%q) = %q %v, want %q %v", c.obj, got, ok, c.want, c.ok)
		}
	}
	// Whatever the upstream literal, the output is one valid JSON string.
	for _, raw := range []string{`"plain"`, `"a\nb"`, `"\u00e9"`, "\"tab\there\"", `"bad\x"`, `"\u12"`, `"\`, ``} {
		if got := appendRawString(nil, raw); !json.Valid(got) || got[0] != '"' {
			t.Errorf("appendRawString(%q) = %s, not a valid JSON string", raw, got)
		}
	}
}
