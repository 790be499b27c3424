package wasm

import (
	"bytes"
	"encoding/json"
	"strings"

	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// filter is the one pipeline.Filter a request gets when plugins that
// apply to it have response or stream hooks. Plugins see the response in
// reverse list order (the first plugin sees the request first and the
// response last); with several stream plugins, what one emits (its
// inserts, the patched event) is what the next one sees.
//
// A filter is allocated per request and keeps each plugin's stream state
// (the state its last result returned, and its event count), so any
// pooled instance may run the next event.
type filter struct {
	s  *Stage
	ps []*Plugin
	st []streamState
	// redacted counts a stream's redactions by kind, logged once at End.
	redacted map[string]int
}

type streamState struct {
	state  []byte
	events int
}

var _ pipeline.Filter = (*filter)(nil)

func (s *Stage) newFilter(mask uint64) *filter {
	f := &filter{s: s}
	for i := len(s.plugins) - 1; i >= 0; i-- {
		if mask&(1<<i) != 0 {
			f.ps = append(f.ps, s.plugins[i])
		}
	}
	f.st = make([]streamState, len(f.ps))
	return f
}

// Body runs on_response.
func (f *filter) Body(x *pipeline.Exchange, body []byte) ([]byte, error) {
	for _, p := range f.ps {
		if !p.hooks.has(HookResponse) {
			continue
		}
		in, r, fl := p.call(HookResponse, func(b []byte) []byte { return appendResponseEnvelope(b, x, body) })
		if fl != nil {
			if err := f.s.failure(p, fl); err != nil {
				return nil, err
			}
			continue
		}
		if r == nil {
			p.finish(in, nil)
			continue
		}
		nb, e := r.applyPatch(body)
		if e != nil {
			if err := f.s.refuse(p, in, HookResponse, e); err != nil {
				return nil, err
			}
			continue
		}
		p.finish(in, nil)
		body = nb
		for _, k := range sortedKeys(r.SetHeaders) {
			if !deniedHeader(k) {
				x.ResponseSet = append(x.ResponseSet, [2]string{strings.ToLower(k), r.SetHeaders[k]})
			}
		}
		for _, k := range r.RemoveHeaders {
			x.ResponseSet = slicesDeleteHeader(x.ResponseSet, k)
		}
		f.s.record(p, x, HookResponse, r, nil)
		if r.Action == "reject" {
			return nil, rejectError(p, r.Reject)
		}
	}
	return body, nil
}

func slicesDeleteHeader(hs [][2]string, k string) [][2]string {
	out := hs[:0]
	for _, h := range hs {
		if !strings.EqualFold(h[0], k) {
			out = append(out, h)
		}
	}
	return out
}

// Event runs on_stream_event through the plugins.
func (f *filter) Event(x *pipeline.Exchange, name, data []byte, emit pipeline.Emit) error {
	return f.event(x, 0, name, data, emit)
}

// event passes one event to plugin k and what it emits to k+1, ...
func (f *filter) event(x *pipeline.Exchange, k int, name, data []byte, emit pipeline.Emit) error {
	for k < len(f.ps) && !f.ps[k].hooks.has(HookStreamEvent) {
		k++
	}
	if k == len(f.ps) {
		return emit(name, data)
	}
	p, st := f.ps[k], &f.st[k]
	index := st.events
	st.events++
	in, r, fl := p.call(HookStreamEvent, func(b []byte) []byte { return appendEventEnvelope(b, x, index, name, data, st.state) })
	if fl != nil {
		// fail_open: the event passes unchanged and the held-back state
		// is dropped.
		st.state = st.state[:0]
		if err := f.s.failure(p, fl); err != nil {
			return err
		}
		return f.event(x, k+1, name, data, emit)
	}
	if r == nil {
		p.finish(in, nil)
		st.state = st.state[:0]
		return f.event(x, k+1, name, data, emit)
	}
	nd, e := r.applyPatch(data)
	if e != nil {
		st.state = st.state[:0]
		if err := f.s.refuse(p, in, HookStreamEvent, e); err != nil {
			return err
		}
		return f.event(x, k+1, name, data, emit)
	}
	p.finish(in, nil)
	st.state = append(st.state[:0], r.State...)
	f.recordStream(p, x, HookStreamEvent, r)
	if r.Action == "reject" {
		return rejectError(p, r.Reject)
	}
	if err := f.inserts(x, k+1, r.Insert, emit); err != nil {
		return err
	}
	if r.Drop {
		return nil
	}
	return f.event(x, k+1, name, nd, emit)
}

func (f *filter) recordStream(p *Plugin, x *pipeline.Exchange, h Hook, r *Result) {
	if len(r.Redactions) > 0 && f.redacted == nil {
		f.redacted = map[string]int{}
	}
	f.s.record(p, x, h, r, f.redacted)
}

// inserts emits a result's inserted events into plugin k onwards. A JSON
// string's content is the event's data as is ("[DONE]"); any other value
// is sent as compact JSON.
func (f *filter) inserts(x *pipeline.Exchange, k int, evs []InsertEvent, emit pipeline.Emit) error {
	for _, ev := range evs {
		var data []byte
		if ev.Data[0] == '"' {
			var s string
			if err := json.Unmarshal(ev.Data, &s); err != nil {
				return errs.Internal("plugin insert", err)
			}
			data = []byte(s)
		} else {
			var b bytes.Buffer
			if err := json.Compact(&b, ev.Data); err != nil {
				return errs.Internal("plugin insert", err)
			}
			data = b.Bytes()
		}
		var name []byte
		if ev.Event != "" {
			name = []byte(ev.Event)
		}
		if err := f.event(x, k, name, data, emit); err != nil {
			return err
		}
	}
	return nil
}

// End runs on_stream_end, in the same order as the events. When the
// stream completed, a plugin's inserts are emitted (through the plugins
// after it) and a reject or fail_closed failure ends the stream with an
// error; when it was cut, only labels, redactions and notes are kept.
func (f *filter) End(x *pipeline.Exchange, complete bool, emit pipeline.Emit) error {
	var first error
	for k, p := range f.ps {
		if !p.hooks.has(HookStreamEnd) {
			continue
		}
		st := &f.st[k]
		in, r, fl := p.call(HookStreamEnd, func(b []byte) []byte { return appendEndEnvelope(b, x, st.events, complete, st.state) })
		st.state = st.state[:0]
		if fl != nil {
			if err := f.s.failure(p, fl); err != nil && complete && first == nil {
				first = err
			}
			continue
		}
		if r == nil {
			p.finish(in, nil)
			continue
		}
		p.finish(in, nil)
		f.recordStream(p, x, HookStreamEnd, r)
		if !complete || first != nil {
			continue
		}
		if r.Action == "reject" {
			first = rejectError(p, r.Reject)
			continue
		}
		if err := f.inserts(x, k+1, r.Insert, emit); err != nil {
			first = err
		}
	}
	if len(f.redacted) > 0 {
		f.s.log.Info("plugin redacted stream", zap.String("id", x.ID), zap.Any("redactions", f.redacted))
	}
	return first
}
