package policy

import (
	"bytes"
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// respFilter runs the response decision on a request's output: once on a
// complete body; on a stream, every StreamWindow bytes of text and once at
// the end. A stream's events are held back until the window they belong
// to is allowed, so denied text never reaches the client; the cost is
// that the client sees output in windows (the first after StreamWindow
// bytes of text, or at the end).
//
// One respFilter serves one request; it is not safe for concurrent use.
type respFilter struct {
	e   *Engine
	rev *revision
	in  *reqInput

	// text is the output since the last evaluation; tail is the end of
	// the evaluated text, prepended to the next window so a match across
	// the boundary is seen.
	text   []byte
	tail   string
	offset int // bytes of output before text
	window int // windows evaluated
	done   bool

	held []byte // held events: name and data bytes
	evs  []heldEvent
}

type heldEvent struct {
	nameEnd, dataEnd int // offsets into held; the name starts after the previous event
	named            bool
}

var _ pipeline.Filter = (*respFilter)(nil)

// overlapBytes is how much of the previous window the next one repeats.
const overlapBytes = 256

var kStreamed = ast.StringTerm("streamed")

// Body runs the response decision on a complete response.
func (f *respFilter) Body(x *pipeline.Exchange, body []byte) ([]byte, error) {
	if x.Dialect == llm.OpenAIEmbedding {
		return body, nil
	}
	f.text = appendBodyText(f.text[:0], x.Dialect, body)
	if err := f.evaluate(x, true, false); err != nil {
		return nil, err
	}
	return body, nil
}

// Event holds the event back and evaluates a window once enough text has
// accumulated, or at the stream's terminal event.
func (f *respFilter) Event(x *pipeline.Exchange, name, data []byte, emit pipeline.Emit) error {
	if f.done {
		return emit(name, data)
	}
	terminal := false
	switch x.Dialect {
	case llm.AnthropicMessages:
		switch string(name) {
		case "content_block_delta":
			if d := gjson.GetBytes(data, "delta"); d.Get("type").Str == "text_delta" {
				f.text = append(f.text, d.Get("text").Str...)
			}
		case "message_stop":
			terminal = true
		}
	default:
		if bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
			terminal = true
			break
		}
		field := "delta.content"
		if x.Dialect == llm.OpenAICompletion {
			field = "text"
		}
		gjson.GetBytes(data, "choices").ForEach(func(_, c gjson.Result) bool {
			f.text = append(f.text, c.Get(field).Str...)
			return true
		})
	}
	f.hold(name, data)
	switch {
	case terminal:
		if err := f.evaluate(x, true, true); err != nil {
			return err
		}
		f.done = true
		return f.flush(emit)
	case len(f.text) >= f.e.s.StreamWindow:
		if err := f.evaluate(x, false, true); err != nil {
			return err
		}
		return f.flush(emit)
	}
	return nil
}

// End evaluates what is left of a stream that ended without a terminal
// event, and passes the held events on. A cut stream drops them.
func (f *respFilter) End(x *pipeline.Exchange, complete bool, emit pipeline.Emit) error {
	if f.done || !complete {
		f.held, f.evs = f.held[:0], f.evs[:0]
		return nil
	}
	f.done = true
	if err := f.evaluate(x, true, true); err != nil {
		return err
	}
	return f.flush(emit)
}

func (f *respFilter) hold(name, data []byte) {
	f.held = append(f.held, name...)
	ne := len(f.held)
	f.held = append(f.held, data...)
	f.evs = append(f.evs, heldEvent{nameEnd: ne, dataEnd: len(f.held), named: name != nil})
}

func (f *respFilter) flush(emit pipeline.Emit) error {
	start := 0
	for _, ev := range f.evs {
		var name []byte
		if ev.named {
			name = f.held[start:ev.nameEnd]
		}
		if err := emit(name, f.held[ev.nameEnd:ev.dataEnd]); err != nil {
			return err
		}
		start = ev.dataEnd
	}
	f.held, f.evs = f.held[:0], f.evs[:0]
	return nil
}

// evaluate runs the response decision on the text accumulated since the
// last window (with the overlap before it) and applies it.
func (f *respFilter) evaluate(x *pipeline.Exchange, final, streamed bool) error {
	e := f.e
	start := time.Now()
	text := f.tail + string(f.text)
	truncated := false
	if len(text) > e.s.MaxTextBytes {
		text, truncated = cutUTF8(text, e.s.MaxTextBytes), true
	}
	resp := ast.ObjectTerm(
		[2]*ast.Term{kText, ast.StringTerm(text)},
		[2]*ast.Term{kFinal, ast.InternedTerm(final)},
		[2]*ast.Term{kStreamed, ast.InternedTerm(streamed)},
		[2]*ast.Term{kWindow, ast.IntNumberTerm(f.window)},
		[2]*ast.Term{kOffset, ast.IntNumberTerm(f.offset - len(f.tail))},
		[2]*ast.Term{kTruncated, ast.InternedTerm(truncated)},
	)
	f.offset += len(f.text)
	f.tail = overlapTail(text)
	f.text = f.text[:0]
	f.window++
	ctx := x.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	d, err := f.rev.eval(ctx, f.rev.response, f.in.responseValue(e, x, resp), time.Now(), e.s.Timeout, true, nil)
	if err != nil {
		e.met.decision(phaseResponse, resultError, time.Since(start))
		if fe := e.failed(x, err, "response"); fe != nil {
			return fe
		}
		return nil
	}
	x.Labels = appendNew(x.Labels, d.Tags)
	if !streamed {
		// Headers can still be set on a complete response; a stream's
		// were sent with its first byte.
		x.ResponseSet = append(x.ResponseSet, d.Headers...)
	}
	if !d.Allow {
		e.met.decision(phaseResponse, resultDeny, time.Since(start))
		return e.denied(x, &d, "response")
	}
	e.met.decision(phaseResponse, resultAllow, time.Since(start))
	return nil
}

// overlapTail is the last overlapBytes of s, not splitting a rune.
func overlapTail(s string) string {
	if len(s) <= overlapBytes {
		return strings.Clone(s)
	}
	i := len(s) - overlapBytes
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return strings.Clone(s[i:])
}

// appendNew appends the tags not already in labels (windows repeat them).
func appendNew(labels, tags []string) []string {
	for _, t := range tags {
		dup := false
		for _, l := range labels {
			if l == t {
				dup = true
				break
			}
		}
		if !dup {
			labels = append(labels, t)
		}
	}
	return labels
}

// appendBodyText appends a complete response's text, in the client's
// dialect: the choices' message content (or text), or Anthropic's text
// blocks.
func appendBodyText(dst []byte, d llm.Dialect, body []byte) []byte {
	root := gjson.ParseBytes(body)
	switch d {
	case llm.AnthropicMessages:
		root.Get("content").ForEach(func(_, b gjson.Result) bool {
			if b.Get("type").Str == "text" {
				if len(dst) > 0 {
					dst = append(dst, '\n')
				}
				dst = append(dst, b.Get("text").Str...)
			}
			return true
		})
	default:
		field := "message.content"
		if d == llm.OpenAICompletion {
			field = "text"
		}
		root.Get("choices").ForEach(func(_, c gjson.Result) bool {
			if t := c.Get(field); t.Type == gjson.String {
				if len(dst) > 0 {
					dst = append(dst, '\n')
				}
				dst = append(dst, t.Str...)
			}
			return true
		})
	}
	return dst
}
