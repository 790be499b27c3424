package translate

import (
	"testing"

	"github.com/portcullis/portcullis/engine/llm"
)

// One benchmark per direction; each reports allocations.

func BenchmarkChatToAnthropicRequest(b *testing.B) {
	body := read(b, "testdata/chat_request/tools.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req, err := DecodeChat(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ChatToAnthropic(req, "claude-sonnet-4-5"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAnthropicToChatRequest(b *testing.B) {
	body := read(b, "testdata/anthropic_request/tools.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := AnthropicToChat(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAnthropicResponseToChat(b *testing.B) {
	body := read(b, "testdata/anthropic_response/tool_use.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := AnthropicResponseToChat(body, "alias"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChatResponseToAnthropic(b *testing.B) {
	body := read(b, "testdata/chat_response/tool_calls.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := ChatResponseToAnthropic(body, "alias"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChatResponseToCompletion(b *testing.B) {
	body := read(b, "testdata/chat_response/text.json")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ChatResponseToCompletion(body, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStream runs a whole recorded stream through a fresh translator per
// iteration; allocations are per stream, not per event.
func benchStream(b *testing.B, path string, newTr func() StreamTranslator) {
	evs := events(b, path)
	emit := func(name, data []byte) error { return nil }
	b.ReportAllocs()
	b.ReportMetric(float64(len(evs)), "events/op")
	for b.Loop() {
		tr := newTr()
		for _, ev := range evs {
			if err := tr.Event(ev, emit); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkAnthropicToChatStream(b *testing.B) {
	benchStream(b, "testdata/anthropic_stream/tool.sse", func() StreamTranslator { return NewAnthropicToChatStream("", true) })
}

func BenchmarkChatToAnthropicStream(b *testing.B) {
	benchStream(b, "testdata/chat_stream/tool.sse", func() StreamTranslator { return NewChatToAnthropicStream("") })
}

func BenchmarkChatToCompletionStream(b *testing.B) {
	benchStream(b, "testdata/chat_stream/text_usage.sse", func() StreamTranslator { return NewChatToCompletionStream("") })
}

func BenchmarkUsageMeter(b *testing.B) {
	evs := events(b, "testdata/anthropic_stream/tool.sse")
	b.ReportAllocs()
	for b.Loop() {
		var m UsageMeter
		for _, ev := range evs {
			m.Observe(llm.AnthropicMessages, ev)
		}
	}
}

func BenchmarkUsageFromBody(b *testing.B) {
	body := read(b, "testdata/chat_response/text.json")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := UsageFromBody(llm.OpenAIChat, body); !ok {
			b.Fatal("no usage")
		}
	}
}
