package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
)

// Golden tests: every input fixture in testdata/<dir>/ (written from the
// providers' public API references) is translated and compared with its
// NAME.<target>.golden.* file. Run `go test ./engine/translate -update` to
// rewrite the golden files, then review the diff.

var update = flag.Bool("update", false, "rewrite golden files")

// fixedNow is the "created" stamp in every golden file.
const fixedNow = 1700000000

func TestMain(m *testing.M) {
	nowUnix = func() int64 { return fixedNow }
	os.Exit(m.Run())
}

// inputs lists the fixtures of dir with extension ext (golden files
// excluded).
func inputs(t *testing.T, dir, ext string) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join("testdata", dir, "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range all {
		if !strings.Contains(filepath.Base(p), ".golden.") {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no fixtures in testdata/%s", dir)
	}
	return out
}

func goldenPath(in, target, ext string) string {
	return strings.TrimSuffix(in, filepath.Ext(in)) + "." + target + ".golden" + ext
}

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from translation:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// indent checks that b is one compact JSON value and pretty-prints it for
// the golden file.
func indent(t *testing.T, b []byte) []byte {
	t.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		t.Fatalf("output is not valid JSON: %v\n%s", err, b)
	}
	if !bytes.Equal(compact.Bytes(), b) {
		t.Errorf("output is not compact JSON:\n%s", b)
	}
	var out bytes.Buffer
	_ = json.Indent(&out, b, "", "  ")
	out.WriteByte('\n')
	return out.Bytes()
}

func TestGoldenChatToAnthropic(t *testing.T) {
	for _, in := range inputs(t, "chat_request", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			req, err := DecodeChat(read(t, in))
			if err != nil {
				t.Fatal(err)
			}
			body, err := ChatToAnthropic(req, "")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, goldenPath(in, "anthropic", ".json"), indent(t, body))
		})
	}
}

func TestGoldenAnthropicToChat(t *testing.T) {
	for _, in := range inputs(t, "anthropic_request", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			req, err := AnthropicToChat(read(t, in))
			if err != nil {
				t.Fatal(err)
			}
			body, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, goldenPath(in, "chat", ".json"), indent(t, body))
			// And back: what an Anthropic upstream receives for an Anthropic
			// client whose request went through the canonical shape.
			back, err := ChatToAnthropic(req, "")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, goldenPath(in, "roundtrip", ".json"), indent(t, back))
		})
	}
}

func TestGoldenCompletionToChat(t *testing.T) {
	for _, in := range inputs(t, "completion_request", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			req, err := CompletionToChat(read(t, in))
			if err != nil {
				t.Fatal(err)
			}
			body, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, goldenPath(in, "chat", ".json"), indent(t, body))
		})
	}
}

func TestGoldenAnthropicResponseToChat(t *testing.T) {
	for _, in := range inputs(t, "anthropic_response", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			body, tok, err := AnthropicResponseToChat(read(t, in), "")
			if err != nil {
				t.Fatal(err)
			}
			if u, ok := UsageFromBody(llm.OpenAIChat, body); !ok || u != tok {
				t.Errorf("usage in body %+v, returned %+v", u, tok)
			}
			checkGolden(t, goldenPath(in, "chat", ".json"), indent(t, body))
		})
	}
}

func TestGoldenChatResponse(t *testing.T) {
	for _, in := range inputs(t, "chat_response", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			src := read(t, in)
			want, _ := UsageFromBody(llm.OpenAIChat, src)
			body, tok, err := ChatResponseToAnthropic(src, "")
			if err != nil {
				t.Fatal(err)
			}
			if want.Reasoning = 0; tok.Prompt != want.Prompt || tok.Completion != want.Completion {
				t.Errorf("usage %+v, body says %+v", tok, want)
			}
			checkGolden(t, goldenPath(in, "anthropic", ".json"), indent(t, body))

			body, _, err = ChatResponseToCompletion(src, "")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, goldenPath(in, "completion", ".json"), indent(t, body))
		})
	}
}

// runStream feeds an SSE fixture through tr and renders what it emits in
// SSE framing. An error ends the stream and is recorded as an SSE comment,
// as is the final usage.
func runStream(t testing.TB, tr StreamTranslator, in []byte) ([]byte, error) {
	t.Helper()
	var out []byte
	emit := func(name, data []byte) error {
		if string(data) != "[DONE]" && !json.Valid(data) {
			t.Errorf("emitted invalid JSON: %s", data)
		}
		out = sse.AppendEvent(out, name, data)
		return nil
	}
	r := sse.NewReader(bytes.NewReader(in), 0)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Event(ev, emit); err != nil {
			var e *errs.Error
			if !errors.As(err, &e) {
				t.Fatalf("error is %T, want *errs.Error", err)
			}
			out = fmt.Appendf(out, ": error status=%d code=%s type=%s retryable=%v fallback=%v message=%q\n\n",
				e.Status, e.Code, e.Type, e.Retryable, e.Fallback, e.Message)
			return out, err
		}
	}
	u := tr.Usage()
	out = fmt.Appendf(out, ": done=%v usage prompt=%d completion=%d cached_read=%d cache_write=%d reasoning=%d\n\n",
		tr.Done(), u.Prompt, u.Completion, u.CachedRead, u.CacheWrite, u.Reasoning)
	return out, nil
}

func TestGoldenAnthropicStream(t *testing.T) {
	for _, in := range inputs(t, "anthropic_stream", ".sse") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			out, _ := runStream(t, NewAnthropicToChatStream("", true), read(t, in))
			checkGolden(t, goldenPath(in, "chat", ".sse"), out)
		})
	}
}

func TestGoldenChatStream(t *testing.T) {
	for _, in := range inputs(t, "chat_stream", ".sse") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			out, _ := runStream(t, NewChatToAnthropicStream(""), read(t, in))
			checkGolden(t, goldenPath(in, "anthropic", ".sse"), out)
			out, _ = runStream(t, NewChatToCompletionStream(""), read(t, in))
			checkGolden(t, goldenPath(in, "completion", ".sse"), out)
		})
	}
}
