package server

import (
	"encoding/json"
	"net"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// FuzzParse: the envelope check never panics, rejects with a typed 4xx,
// and accepts only requests with a usable model.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`), uint8(1))
	f.Add([]byte(`{"model":"m","input":["a"]}`), uint8(3))
	f.Add([]byte(`{"model":"c","max_tokens":5,"messages":[]}`), uint8(4))
	f.Add([]byte(`{"model":`), uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, d uint8) {
		x := &pipeline.Exchange{Dialect: llm.Dialect(d%4 + 1), Body: body}
		if e := parse(x, nil); e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" {
				t.Fatalf("bad rejection %+v", e)
			}
			return
		}
		if x.Model == "" {
			t.Fatalf("accepted without a model: %q", body)
		}
	})
}

// FuzzMembers: on every valid JSON object, parse's member walk finds the
// members gjson's ForEach finds, with the same keys and raw values, and
// parse reads model, stream and max_tokens as gjson reads them.
func FuzzMembers(f *testing.F) {
	for _, s := range membersCases {
		f.Add([]byte(s))
	}
	for _, s := range parseFieldCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkMembers(t, body)
		checkParseFields(t, body)
	})
}

// FuzzHandle drives the whole request path (parse, route, translate, the
// mock provider, the response writer) with arbitrary bodies on every
// endpoint: the answer is always a status with a JSON body, never a panic.
func FuzzHandle(f *testing.F) {
	cfg, err := config.Parse([]byte("model_list:\n  - model_name: m\n    litellm_params: {model: mock/m}\n"), "fuzz", nil)
	if err != nil {
		f.Fatal(err)
	}
	rt, err := gateway.Build(cfg, gateway.Options{})
	if err != nil {
		f.Fatal(err)
	}
	s := New(Options{Holder: gateway.NewHolder(rt)})
	paths := []string{"/v1/chat/completions", "/v1/messages", "/v1/completions", "/v1/embeddings"}
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}}]}`), uint8(0))
	f.Add([]byte(`{"model":"m","max_tokens":5,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"r"}]}]}`), uint8(1))
	f.Add([]byte(`{"model":"m","prompt":["a","b"],"n":2}`), uint8(2))
	f.Add([]byte(`{"model":"m","input":"x","dimensions":3}`), uint8(3))
	f.Fuzz(func(t *testing.T, body []byte, p uint8) {
		ctx := &fasthttp.RequestCtx{}
		req := &fasthttp.Request{}
		req.Header.SetMethod("POST")
		req.SetRequestURI(paths[int(p)%len(paths)])
		req.SetBody(body)
		ctx.Init(req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
		s.Handle(ctx)
		st := ctx.Response.StatusCode()
		if ctx.Response.IsBodyStream() {
			if st != 200 {
				t.Fatalf("stream with status %d", st)
			}
			ctx.Response.Reset() // closes the stream body, releasing the exchange
			return
		}
		out := ctx.Response.Body()
		if !json.Valid(out) {
			t.Fatalf("status %d with non-JSON body %q", st, out)
		}
		if st >= 500 {
			var e struct{ Error struct{ Code errs.Code } }
			_ = json.Unmarshal(out, &e)
			t.Fatalf("server error %d for %q: %s", st, body, out)
		}
	})
}
