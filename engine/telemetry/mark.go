package telemetry

import (
	"context"
	"runtime/trace"
)

// Stages of a request that Mark records. portcullis-bench -trace times a
// stream's first byte between them, inside the gateway, from an execution
// trace (bench/README.md).
const (
	MarkRequest      = "request"       // the handler has the request (fasthttp read and parsed its head and body)
	MarkParsed       = "parsed"        // the body is parsed; the pipeline starts
	MarkUpstreamCall = "upstream-call" // the router calls the upstream endpoint
	MarkUpstreamHead = "upstream-head" // the upstream's response head is read
	MarkRouted       = "routed"        // the pipeline returned (a stream: its first event is read)
	MarkHandled      = "handled"       // the handler returned; fasthttp writes the response head
	MarkBody         = "body"          // the response body's first write begins
)

// Mark records that the calling goroutine's request reached stage, as a log
// event ("portcullis" category) in the Go execution trace when one is being
// taken (/debug/pprof/trace with PORTCULLIS_PPROF_ADDR set). Otherwise it is
// one atomic load.
func Mark(stage string) {
	if trace.IsEnabled() {
		trace.Log(context.Background(), "portcullis", stage)
	}
}
