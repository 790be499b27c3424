package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
)

// The fuzz targets assert that no input panics, that every error is an
// *errs.Error, and that whatever the translators write is valid JSON.

func addSeeds(f *testing.F, pattern string, extra ...string) {
	files, _ := filepath.Glob(pattern)
	for _, p := range files {
		if strings.Contains(p, ".golden.") {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

func mustBeErrs(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is %T, want *errs.Error", err, err)
	}
	if _, ok := err.(*errs.Error); !ok {
		t.Fatalf("error %T wraps *errs.Error instead of being one", err)
	}
}

func FuzzDecodeChat(f *testing.F) {
	addSeeds(f, "testdata/chat_request/*.json",
		`{"model":"m","messages":[{"role":"tool","content":[{"type":"image_url","image_url":{"url":"data:;base64,"}}]}]}`,
		`{"messages":[{"role":"assistant","content":[],"tool_calls":[{"function":{"arguments":"{"}}]}],"n":0,"tool_choice":{}}`,
		`{"messages":[{"role":"user","content":null}],"tools":[{"function":{"parameters":null}}],"parallel_tool_calls":false}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeChat(body)
		mustBeErrs(t, err)
		if err != nil {
			return
		}
		out, err := ChatToAnthropic(req, "claude")
		mustBeErrs(t, err)
		if err == nil && !json.Valid(out) {
			t.Fatalf("invalid Anthropic body: %s", out)
		}
	})
}

func FuzzAnthropicToChat(f *testing.F) {
	addSeeds(f, "testdata/anthropic_request/*.json",
		`{"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text"}]}]}]}`,
		`{"system":[],"messages":[{"role":"assistant","content":[{"type":"tool_use","input":[1]}]}],"tools":[{"name":"x"}],"tool_choice":{"type":"tool","name":"x"}}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := AnthropicToChat(body)
		mustBeErrs(t, err)
		if err != nil {
			return
		}
		if _, err := json.Marshal(req); err != nil {
			t.Fatalf("canonical request does not marshal: %v", err)
		}
		out, err := ChatToAnthropic(req, "")
		mustBeErrs(t, err)
		if err == nil && !json.Valid(out) {
			t.Fatalf("invalid Anthropic body: %s", out)
		}
	})
}

// FuzzAnthropicStream feeds arbitrary SSE text, parsed as a real upstream
// stream would be, to every stream translator (and the usage meter), then
// the response converters on the raw input.
func FuzzAnthropicStream(f *testing.F) {
	addSeeds(f, "testdata/*_stream/*.sse",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"\"}}\n\n",
		"event: error\ndata: {\"error\":5}\n\n",
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":3,\"function\":{\"arguments\":\"\\u12\"}}]}}]}\n\ndata: [DONE]\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"\\x\"}}],\"usage\":{\"prompt_tokens\":-1}}\n\n")
	f.Fuzz(func(t *testing.T, in []byte) {
		trs := []StreamTranslator{
			NewAnthropicToChatStream("", true),
			NewChatToAnthropicStream(""),
			NewChatToCompletionStream("m"),
		}
		var meter UsageMeter
		emit := func(name, data []byte) error {
			if !bytes.Equal(data, sse.Done) && !json.Valid(data) {
				t.Fatalf("emitted invalid JSON %q from input %q", data, in)
			}
			return nil
		}
		failed := make([]bool, len(trs))
		r := sse.NewReader(bytes.NewReader(in), 1<<16)
		for {
			ev, err := r.Next()
			if err != nil {
				break
			}
			meter.Observe(llm.OpenAIChat, ev)
			meter.Observe(llm.AnthropicMessages, ev)
			for i, tr := range trs {
				if failed[i] {
					continue
				}
				if err := tr.Event(ev, emit); err != nil {
					mustBeErrs(t, err)
					failed[i] = true
				}
				_ = tr.Usage()
				_ = tr.Done()
			}
		}
		_, _ = meter.Tokens()
		for _, conv := range []func([]byte, string) ([]byte, llm.Tokens, error){AnthropicResponseToChat, ChatResponseToAnthropic, ChatResponseToCompletion} {
			out, _, err := conv(in, "")
			mustBeErrs(t, err)
			if err == nil && !json.Valid(out) {
				t.Fatalf("invalid response body %s", out)
			}
		}
		_, _ = UsageFromBody(llm.OpenAIChat, in)
		_, _ = UsageFromBody(llm.AnthropicMessages, in)
	})
}
