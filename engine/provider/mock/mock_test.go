package mock

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
	_ "github.com/portcullis/portcullis/engine/translate" // registers the request decoders
)

func newMock(t *testing.T, params map[string]any) *Provider {
	t.Helper()
	p, err := New(provider.Spec{Provider: "mock", Model: "m", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Provider)
}

func req(body string, stream bool) *provider.Request {
	return &provider.Request{Dialect: llm.OpenAIChat, Body: []byte(body), Model: "m", Stream: stream}
}

const hello = `{"model":"x","messages":[{"role":"user","content":"hello world"}]}`

func TestDeterministicReply(t *testing.T) {
	p := newMock(t, nil)
	a, err := p.Chat(context.Background(), req(hello, false))
	if err != nil {
		t.Fatal(err)
	}
	var r llm.ChatResponse
	if err := json.Unmarshal(a.Body, &r); err != nil {
		t.Fatal(err)
	}
	if got := r.Choices[0].Message.Content.Text; got != "This is a mock response from m to: hello world" {
		t.Fatalf("reply %q", got)
	}
	if !a.HasUsage || a.Usage.Completion != 10 {
		t.Fatalf("usage %+v", a.Usage)
	}
}

func TestFailRateIsExact(t *testing.T) {
	p := newMock(t, map[string]any{"mock_fail_rate": 0.25, "mock_fail_status": 503})
	fails := 0
	for i := 0; i < 100; i++ {
		_, err := p.Chat(context.Background(), req(hello, false))
		if err != nil {
			var e *errs.Error
			if !errors.As(err, &e) || e.Status != 503 || !e.Retryable {
				t.Fatalf("injected error %+v", err)
			}
			fails++
		}
	}
	if fails != 25 {
		t.Fatalf("%d failures in 100 calls at rate 0.25", fails)
	}
}

func TestStreamChunksAndBreak(t *testing.T) {
	p := newMock(t, map[string]any{"mock_chunks": 7, "mock_response": "one two three four five six seven eight nine ten"})
	r, err := p.Chat(context.Background(), req(hello, true))
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	n := 0
	for {
		ev, err := r.Stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.IsDone() {
			continue
		}
		var c llm.ChatChunk
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != nil && *c.Choices[0].Delta.Content != "" {
			n++
			text.WriteString(*c.Choices[0].Delta.Content)
		}
	}
	if n != 7 || text.String() != "one two three four five six seven eight nine ten" {
		t.Fatalf("%d chunks, text %q", n, text.String())
	}
	b := newMock(t, map[string]any{"mock_fail_after": 2})
	r, _ = b.Chat(context.Background(), req(hello, true))
	var last error
	for i := 0; i < 10 && last == nil; i++ {
		_, last = r.Stream.Next()
	}
	if errs.CodeOf(last) != errs.CodeUpstreamProtocol {
		t.Fatalf("stream break: %v", last)
	}
}

func TestToolCallArgumentsFollowSchema(t *testing.T) {
	p := newMock(t, nil)
	body := `{"model":"x","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},"unit":{"type":"string","enum":["c","f"]}},"required":["city"]}}}]}`
	r, err := p.Chat(context.Background(), req(body, false))
	if err != nil {
		t.Fatal(err)
	}
	var resp llm.ChatResponse
	_ = json.Unmarshal(r.Body, &resp)
	c := resp.Choices[0]
	if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Name != "get_weather" {
		t.Fatalf("choice %+v", c)
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(c.Message.ToolCalls[0].Function.Arguments), &args); err != nil || args["unit"] != "c" || args["days"] != 1.0 {
		t.Fatalf("arguments %q", c.Message.ToolCalls[0].Function.Arguments)
	}
}

func TestEmbeddings(t *testing.T) {
	p := newMock(t, map[string]any{"mock_embedding_dims": 8})
	r, err := p.Embed(context.Background(), &provider.Request{Dialect: llm.OpenAIEmbedding, Model: "e", Body: []byte(`{"model":"e","input":["a","b"]}`)})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Data []struct{ Embedding []float64 }
	}
	if err := json.Unmarshal(r.Body, &out); err != nil || len(out.Data) != 2 || len(out.Data[0].Embedding) != 8 {
		t.Fatalf("%s", r.Body)
	}
	r2, _ := p.Embed(context.Background(), &provider.Request{Dialect: llm.OpenAIEmbedding, Model: "e", Body: []byte(`{"model":"e","input":["a","b"]}`)})
	if string(r2.Body) != string(r.Body) {
		t.Fatal("embeddings are not deterministic")
	}
}

func TestBadParams(t *testing.T) {
	if _, err := New(provider.Spec{Params: map[string]any{"mock_chunks": "many"}}); err == nil {
		t.Fatal("bad mock_chunks accepted")
	}
}
