// Package barehop is the bare hop of portcullis-bench: a minimal fasthttp
// reverse proxy that forwards every request to one upstream and streams the
// response back as it arrives (each upstream chunk is written and flushed
// as one client chunk). It parses nothing: it is the floor any fasthttp
// gateway pays for one more hop. Like the gateway it marks the request's
// arrival and the upstream's response head (telemetry.Mark, an atomic load
// unless an execution trace is running), for portcullis-bench -trace.
package barehop

import (
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/telemetry"
)

// New returns a server proxying to upstream (host:port).
func New(upstream string) *fasthttp.Server {
	client := &fasthttp.HostClient{
		Addr:                     upstream,
		MaxConns:                 1 << 20,
		MaxIdleConnDuration:      90 * time.Second,
		NoDefaultUserAgentHeader: true,
	}
	return &fasthttp.Server{
		Handler:               Handler(client),
		Name:                  "bare-hop",
		Concurrency:           1 << 20,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
}

// Handler forwards each request through client.
func Handler(client *fasthttp.HostClient) fasthttp.RequestHandler {
	upstream := client.Addr
	return func(ctx *fasthttp.RequestCtx) {
		telemetry.Mark(telemetry.MarkRequest)
		req := fasthttp.AcquireRequest()
		ctx.Request.CopyTo(req)
		req.Header.Del("Connection")
		req.SetHost(upstream)
		resp := fasthttp.AcquireResponse()
		resp.StreamBody = true
		err := client.Do(req, resp)
		telemetry.Mark(telemetry.MarkUpstreamHead)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			fasthttp.ReleaseResponse(resp)
			ctx.Error("bare hop: "+err.Error(), fasthttp.StatusBadGateway)
			return
		}
		resp.Header.CopyTo(&ctx.Response.Header)
		ctx.Response.Header.Del("Connection")
		ctx.Response.SetBodyStream(&body{r: resp.BodyStream(), resp: resp}, resp.Header.ContentLength())
	}
}

// body releases the upstream response when the client response is done.
type body struct {
	r    io.Reader
	resp *fasthttp.Response
}

func (b *body) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *body) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	return err
}
