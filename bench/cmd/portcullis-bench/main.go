// Command portcullis-bench measures what Portcullis adds to a request: it
// runs a fake upstream, a bare fasthttp reverse proxy and the gateway as
// separate processes, drives each path (direct, bare hop, Portcullis) with
// the same load, and reports the differences, the gateway's CPU time per
// request and its memory. See bench/README.md.
//
//	portcullis-bench run [-mode short|full] [-gateway bench/out/portcullis] [-results bench/RESULTS.md] [-strict] [-only ...] [-keys ...]
//	portcullis-bench upstream -listen 127.0.0.1:9100 [-chunks 50] [-gap 5ms] [-delay 0] [-idle-gap 60s]
//	portcullis-bench bare-hop -listen 127.0.0.1:9101 -upstream 127.0.0.1:9100
//	portcullis-bench seed-keys -db portcullis.db -n 1000000 [-bulk=true]
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/portcullis/portcullis/bench/internal/barehop"
	"github.com/portcullis/portcullis/bench/internal/upstream"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		// No default command: a bare invocation would otherwise start a
		// whole run that rewrites bench/RESULTS.md.
		fmt.Fprintln(os.Stderr, "usage: portcullis-bench run|upstream|bare-hop|seed-keys [flags] (run -h for run's flags; bench/README.md)")
		os.Exit(2)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		os.Exit(run(args))
	case "upstream":
		os.Exit(serveUpstream(args))
	case "bare-hop":
		os.Exit(serveBareHop(args))
	case "seed-keys":
		os.Exit(serveSeedKeys(args))
	default:
		fmt.Fprintf(os.Stderr, "portcullis-bench: unknown command %q (run, upstream, bare-hop, seed-keys)\n", cmd)
		os.Exit(2)
	}
}

// exitAfter ends a helper process after lifetime, so nothing outlives a
// bench run even if the driver dies without cleaning up.
func exitAfter(lifetime time.Duration) {
	if lifetime > 0 {
		time.AfterFunc(lifetime, func() { os.Exit(0) })
	}
}

func serveUpstream(args []string) int {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9100", "address to serve on")
	var cfg upstream.Config
	fs.DurationVar(&cfg.Delay, "delay", 0, "fixed latency added before each response (or its first chunk)")
	fs.IntVar(&cfg.Chunks, "chunks", 50, "content chunks of a streamed response")
	fs.DurationVar(&cfg.Gap, "gap", 5*time.Millisecond, "pause between two chunks")
	fs.DurationVar(&cfg.IdleGap, "idle-gap", time.Minute, "pause between keep-alive comments of an idle stream (/idle/...)")
	lifetime := fs.Duration("lifetime", 30*time.Minute, "exit after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	raiseNoFile()
	exitAfter(*lifetime)
	// -listen may name several addresses (comma-separated), served alike:
	// (e) gives each hop its own destination address, so that one hop's
	// 10,000 closed upstream connections (in TIME_WAIT for a minute) do
	// not crowd the next hop's ephemeral ports to the same destination.
	srv := upstream.Server(cfg)
	errc := make(chan error, 1)
	for _, a := range strings.Split(*listen, ",") {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() { errc <- srv.Serve(ln) }()
	}
	if err := <-errc; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func serveBareHop(args []string) int {
	fs := flag.NewFlagSet("bare-hop", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9101", "address to serve on")
	up := fs.String("upstream", "127.0.0.1:9100", "upstream host:port")
	lifetime := fs.Duration("lifetime", 30*time.Minute, "exit after this long")
	pprofAddr := fs.String("pprof", "", "a loopback address to serve Go's /debug/pprof/trace on (run -trace)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	raiseNoFile()
	exitAfter(*lifetime)
	if *pprofAddr != "" {
		if err := serveTrace(*pprofAddr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := barehop.New(*up).Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// serveTrace serves /debug/pprof/trace on addr, a loopback address.
func serveTrace(addr string) error {
	if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("-pprof %q: want a loopback host:port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}
