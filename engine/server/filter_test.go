package server

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// shout is a test stage: its filter upper-cases the answer's text, holds
// the last event's text back until the terminal event, and records how
// the stream ended.
type shout struct {
	ended, complete atomic.Int32
	failOn          string // an Event or Body error when the text contains this
}

func (s *shout) Name() string { return "shout" }

func (s *shout) Serve(x *pipeline.Exchange, next pipeline.Handler) error {
	x.AddFilter(&shoutFilter{s: s})
	x.ResponseSet = append(x.ResponseSet, [2]string{"x-shout", "yes"})
	return next(x)
}

type shoutFilter struct {
	s    *shout
	held []byte
}

func (f *shoutFilter) Body(x *pipeline.Exchange, body []byte) ([]byte, error) {
	c := gjson.GetBytes(body, "choices.0.message.content").String()
	if f.s.failOn != "" && strings.Contains(c, f.s.failOn) {
		return nil, errs.New(451, "shout_refused", "refused")
	}
	return sjson.SetBytes(body, "choices.0.message.content", strings.ToUpper(c))
}

func (f *shoutFilter) Event(x *pipeline.Exchange, name, data []byte, emit pipeline.Emit) error {
	if bytes.Equal(data, []byte("[DONE]")) {
		if len(f.held) > 0 {
			if err := emit(nil, []byte(`{"choices":[{"index":0,"delta":{"content":"`+string(f.held)+`"}}]}`)); err != nil {
				return err
			}
		}
		return emit(name, data)
	}
	c := gjson.GetBytes(data, "choices.0.delta.content")
	if !c.Exists() {
		return emit(name, data)
	}
	if f.s.failOn != "" && strings.Contains(c.String(), f.s.failOn) {
		return errs.New(451, "shout_refused", "refused")
	}
	// Emit what was held, hold this one.
	out, _ := sjson.SetBytes(data, "choices.0.delta.content", string(f.held))
	f.held = []byte(strings.ToUpper(c.String()))
	return emit(name, out)
}

func (f *shoutFilter) End(x *pipeline.Exchange, complete bool, emit pipeline.Emit) error {
	f.s.ended.Add(1)
	if complete {
		f.s.complete.Add(1)
	}
	return nil
}

func withStage(m pipeline.Middleware) func(*gateway.Options) {
	return func(o *gateway.Options) { o.Cache = m }
}

func TestFilterRewritesBodyAndStream(t *testing.T) {
	st := &shout{}
	h := newHarnessOpts(t, testConfig, config.ServerSettings{}, withStage(st))
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", ""))
	if resp.StatusCode != 200 || resp.Header.Get("x-shout") != "yes" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
	if c := jsonPath(t, b, "choices", 0, "message", "content").(string); c != strings.ToUpper(c) || c == "" {
		t.Fatalf("content not filtered: %q", c)
	}

	// A stream: every event passes the filter; the held-back text comes
	// out before [DONE]; End reports a complete stream.
	resp, b = h.post("/v1/chat/completions", chat("gpt-4o", `,"stream":true`))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	evs := events(b)
	var text strings.Builder
	for _, e := range evs {
		text.WriteString(gjson.Get(e[1], "choices.0.delta.content").String())
	}
	if evs[len(evs)-1][1] != "[DONE]" || text.Len() == 0 || text.String() != strings.ToUpper(text.String()) {
		t.Fatalf("stream not filtered: %q, last %q", text.String(), evs[len(evs)-1][1])
	}
	if st.ended.Load() != 1 || st.complete.Load() != 1 {
		t.Fatalf("End calls %d, complete %d", st.ended.Load(), st.complete.Load())
	}

	// A cut stream: End(complete=false), the client sees an error event.
	resp, b = h.post("/v1/chat/completions", chat("openai-cut", `,"stream":true`))
	if !bytes.Contains(b, []byte(`"error"`)) {
		t.Fatalf("cut stream without error event: %s", b)
	}
	if st.ended.Load() != 2 || st.complete.Load() != 1 {
		t.Fatalf("after a cut: End calls %d, complete %d", st.ended.Load(), st.complete.Load())
	}
}

func TestFilterErrorFailsRequest(t *testing.T) {
	st := &shout{failOn: " "} // any text with a space
	h := newHarnessOpts(t, testConfig, config.ServerSettings{}, withStage(st))
	resp, b := h.post("/v1/chat/completions", chat("gpt-4o", ""))
	if resp.StatusCode != 451 || jsonPath(t, b, "error", "code") != "shout_refused" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	resp, b = h.post("/v1/chat/completions", chat("gpt-4o", `,"stream":true`))
	evs := events(b)
	if resp.StatusCode != 200 || len(evs) == 0 || !strings.Contains(evs[len(evs)-1][1], "shout_refused") {
		t.Fatalf("mid-stream filter error: %d %s", resp.StatusCode, b)
	}
	if st.complete.Load() != 0 {
		t.Fatalf("a failed stream reported complete")
	}
}
