package main

import (
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"
)

// servePprof serves Go's profiling endpoints (/debug/pprof/...) on addr,
// a loopback address, when PORTCULLIS_PPROF_ADDR names one: a debugging
// aid for operators and for the benchmarks (heap profiles of idle
// streams), never on the gateway's own port. A non-loopback address is
// refused: the profiles show request data.
func servePprof(addr string, log *zap.Logger) {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || !ip.IsLoopback() {
		log.Warn("PORTCULLIS_PPROF_ADDR must be a loopback host:port; profiling endpoints not served", zap.String("addr", addr))
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("profiling endpoints not served", zap.String("addr", addr), zap.Error(err))
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("profiling endpoints", zap.String("addr", "http://"+ln.Addr().String()+"/debug/pprof/"))
	go func() { _ = srv.Serve(ln) }()
}
