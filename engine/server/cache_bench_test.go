package server

import (
	"io"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/portcullis/portcullis/engine/cache"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// BenchmarkCacheHit4K is the whole gateway path of a cache hit for a 4 KiB
// answer, through Handle (no client socket): parse, the chain, key and
// lookup, the body written, the access log line, the spend bookkeeping.
// The upstream answers once, to fill the cache.
func BenchmarkCacheHit4K(b *testing.B) {
	answer := `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("lorem ipsum ", 340) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":900,"total_tokens":909}}`
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	calls := 0
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		calls++
		ctx.SetContentType("application/json")
		ctx.SetBodyString(answer)
	}}
	go func() { _ = up.Serve(ln) }()
	b.Cleanup(func() { _ = up.Shutdown() })
	cfg, err := config.Parse([]byte(`
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-bench
      api_base: http://`+ln.Addr().String()+`/v1
litellm_settings:
  cache: true
`), "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	c, err := cache.New(cfg.Cache, cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := telemetry.NewMetrics()
	rt, err := gateway.Build(cfg, gateway.Options{Metrics: m, Cache: c.Middleware()})
	if err != nil {
		b.Fatal(err)
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zap.InfoLevel))
	s := New(Options{Holder: gateway.NewHolder(rt), Metrics: m, Log: log})
	ctx, req := newBenchCtx()
	req.SetBodyString(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello! Can you tell me a short joke about gateways?"}],"temperature":0,"max_tokens":1024}`)
	passThrough(b, s, ctx, req)
	passThrough(b, s, ctx, req)
	if string(ctx.Response.Header.Peek("x-cache")) != "HIT" || len(ctx.Response.Body()) < 4096 || calls != 1 {
		b.Fatalf("not a 4 KiB hit: x-cache %q, %d bytes, %d upstream calls", ctx.Response.Header.Peek("x-cache"), len(ctx.Response.Body()), calls)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		passThrough(b, s, ctx, req)
	}
}
