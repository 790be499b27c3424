package cache

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
	"github.com/portcullis/portcullis/engine/translate"
)

// clock is a settable time source for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// headers is a provider.Headers over a map.
type headers map[string]string

func (h headers) Peek(k string) []byte {
	if v, ok := h[k]; ok {
		return []byte(v)
	}
	return nil
}

// served is a fake deployment: a nano-dollar per token.
type served struct{}

func (served) Tokens(int)              {}
func (served) Cost(t llm.Tokens) int64 { return int64(t.Total()) * 1000 }

// fakeStream replays events, then ends with end (io.EOF by default).
type fakeStream struct {
	evs    []sse.Event
	end    error
	i      int
	closed atomic.Bool
}

func (s *fakeStream) Next() (sse.Event, error) {
	if s.i >= len(s.evs) {
		if s.end != nil {
			return sse.Event{}, s.end
		}
		return sse.Event{}, io.EOF
	}
	s.i++
	return s.evs[s.i-1], nil
}

func (s *fakeStream) Close() error { s.closed.Store(true); return nil }

// upstream is a fake next handler: it answers with a body or a stream and
// counts its calls.
type upstream struct {
	calls  atomic.Int64
	delay  time.Duration
	d      llm.Dialect
	body   []byte
	events []sse.Event
	end    error // the stream's end (nil: io.EOF)
	err    error
	status int
	bodies [][]byte // the request bodies it saw
	mu     sync.Mutex
}

func (u *upstream) next(x *pipeline.Exchange) error {
	u.calls.Add(1)
	u.mu.Lock()
	u.bodies = append(u.bodies, append([]byte(nil), x.Body...))
	u.mu.Unlock()
	if u.delay > 0 {
		time.Sleep(u.delay)
	}
	if u.err != nil {
		return u.err
	}
	st := u.status
	if st == 0 {
		st = 200
	}
	resp := &provider.Response{Dialect: u.d, Status: st}
	if x.Stream {
		if u.events == nil {
			panic("upstream: no events for a stream")
		}
		resp.Stream = &fakeStream{evs: u.events, end: u.end}
	} else {
		resp.Body = u.body
	}
	x.Response = resp
	x.Served = served{}
	x.ModelGroup = x.RouteGroup()
	x.Attempts = 1
	return nil
}

// result is what the client got.
type result struct {
	err     error
	body    []byte
	events  []sse.Event
	tokens  llm.Tokens
	headers map[string]string
	hit     bool
	saved   int64
	served  bool
	group   string
	stream  *fakeStream
}

// serve runs x through the cache and then plays the server's response
// path (engine/server/llm.go): pass-through bodies and streams, filters in
// run order, the usage chunk hidden when the client did not ask for it,
// End(complete) and the exchange release.
func serve(t testing.TB, c *Cache, x *pipeline.Exchange, next pipeline.Handler) result {
	t.Helper()
	var res result
	res.err = c.Serve(x, next)
	res.headers = map[string]string{}
	for _, h := range x.ResponseSet {
		res.headers[h[0]] = h[1]
	}
	res.hit, res.saved, res.served, res.group = x.CacheHit, x.SavedCost, x.Served != nil, x.ModelGroup
	if res.err != nil {
		release(x)
		return res
	}
	resp := x.Response
	if fs, ok := resp.Stream.(*fakeStream); ok {
		res.stream = fs
	} else if g, ok := resp.Stream.(*guarded); ok {
		res.stream, _ = g.Stream.(*fakeStream)
	}
	fs := x.Filters()
	if resp.Stream == nil {
		body := resp.Body
		if resp.Dialect != x.Dialect {
			t.Errorf("the server would translate %s to %s", resp.Dialect, x.Dialect)
			return res
		}
		res.tokens = resp.Usage
		if !resp.HasUsage {
			res.tokens, _ = translate.UsageFromBody(x.Dialect, body)
		}
		for _, f := range fs {
			var err error
			if body, err = f.Body(x, body); err != nil {
				t.Error(err)
				return res
			}
		}
		res.body = append([]byte(nil), body...)
		release(x)
		return res
	}
	if resp.Dialect != x.Dialect {
		t.Errorf("the server would translate the stream %s to %s", resp.Dialect, x.Dialect)
		return res
	}
	emits := make([]pipeline.Emit, len(fs)+1)
	emits[len(fs)] = func(name, data []byte) error {
		res.events = append(res.events, sse.Event{Name: bytes.Clone(name), Data: bytes.Clone(data)})
		return nil
	}
	for i := len(fs) - 1; i >= 0; i-- {
		f, nx := fs[i], emits[i+1]
		emits[i] = func(name, data []byte) error { return f.Event(x, name, data, nx) }
	}
	hide := x.Dialect == llm.OpenAIChat && !x.IncludeUsage
	var meter translate.UsageMeter
	terminal, complete := false, false
	for {
		ev, err := resp.Stream.Next()
		if err != nil {
			if errors.Is(err, io.EOF) && terminal {
				complete = true
			} else {
				x.Err = errs.New(502, errs.CodeUpstreamProtocol, "stream cut")
			}
			break
		}
		if (x.Dialect == llm.AnthropicMessages && string(ev.Name) == "message_stop") || ev.IsDone() {
			terminal = true
		}
		if bytes.HasPrefix(ev.Data, []byte(`{"error"`)) || string(ev.Name) == "error" {
			x.Err = errs.New(500, errs.CodeUpstream, "error event")
			break
		}
		meter.Observe(x.Dialect, ev)
		if hide && gjson.GetBytes(ev.Data, "usage").IsObject() && gjson.GetBytes(ev.Data, "choices.#").Int() == 0 {
			continue
		}
		if err := emits[0](ev.Name, ev.Data); err != nil {
			t.Error(err)
		}
	}
	res.tokens, _ = meter.Tokens()
	if complete {
		x.Tokens = res.tokens
	}
	for i, f := range fs {
		if err := f.End(x, complete, emits[i+1]); err != nil {
			t.Error(err)
		}
	}
	release(x)
	return res
}

func release(x *pipeline.Exchange) {
	if x.Response != nil {
		x.Response.Release()
	}
}

// exchange builds a request.
func exchange(d llm.Dialect, body string, mod ...func(*pipeline.Exchange)) *pipeline.Exchange {
	x := &pipeline.Exchange{Dialect: d, Body: []byte(body), KeyHash: "key-a", TeamID: "team-a"}
	r := gjson.Parse(body)
	x.Model = r.Get("model").Str
	x.Stream = r.Get("stream").Bool()
	x.IncludeUsage = r.Get("stream_options.include_usage").Bool()
	if c := r.Get("cache"); c.Exists() {
		// As the server's parse: the object moves out of the body.
		x.CacheParams = []byte(c.Raw)
		x.Body, _ = sjson.DeleteBytes(x.Body, "cache")
	}
	for _, m := range mod {
		m(x)
	}
	return x
}

func streaming(x *pipeline.Exchange) { x.Stream = true }

func team(id string) func(*pipeline.Exchange) {
	return func(x *pipeline.Exchange) { x.TeamID = id }
}

func newTestCache(t testing.TB, s config.CacheSettings, o Options) *Cache {
	t.Helper()
	s.Enabled = true
	c, err := New(s, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// fixture reads a file of engine/translate/testdata.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "translate", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// events parses an SSE fixture.
func events(t testing.TB, name string) []sse.Event {
	t.Helper()
	r := sse.NewReader(bytes.NewReader(fixture(t, name)), 0)
	var out []sse.Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sse.Event{Name: bytes.Clone(ev.Name), Data: bytes.Clone(ev.Data)})
	}
}

// assemble turns events into a body with a fresh assembler.
func assemble(t testing.TB, d llm.Dialect, evs []sse.Event, tokens llm.Tokens) []byte {
	t.Helper()
	a := newAssembler(d)
	for _, ev := range evs {
		a.event(ev.Name, ev.Data)
	}
	b, ok := a.body(tokens)
	if !ok {
		t.Fatalf("assembler refused the stream (lossy=%v done=%v)", a.lossy, a.done)
	}
	if !gjson.ValidBytes(b) {
		t.Fatalf("assembled body is not JSON: %s", b)
	}
	return b
}

// drain reads a provider.Stream to its end.
func drain(t testing.TB, s provider.Stream) []sse.Event {
	t.Helper()
	var out []sse.Event
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if !gjson.Valid(string(ev.Data)) && !ev.IsDone() {
			t.Fatalf("replayed event is not JSON: %s", ev.Data)
		}
		out = append(out, sse.Event{Name: bytes.Clone(ev.Name), Data: bytes.Clone(ev.Data)})
	}
}
