// Command portcullis runs the Portcullis AI gateway.
//
//	portcullis [--config FILE] [--port 4000] [--host 0.0.0.0]   serve (LiteLLM's flags)
//	portcullis validate --config FILE                          check a config without serving
//	portcullis mock-upstream [--port 9000]                     a fake OpenAI/Anthropic upstream for demos
//	portcullis policy test [dir] | eval --input FILE           run Rego policy tests; evaluate a decision
//	portcullis plugin test --module X.wasm --input FILE | inspect   run a Wasm plugin hook in the real host
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/server"
	"github.com/portcullis/portcullis/engine/telemetry"
	"github.com/portcullis/portcullis/engine/testupstream"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "validate":
			return validate(args[1:])
		case "mock-upstream":
			return mockUpstream(args[1:])
		case "policy":
			return policyMain(args[1:])
		case "plugin":
			return pluginMain(args[1:])
		case "version", "--version":
			fmt.Println("portcullis", version)
			return 0
		}
	}
	return serve(args)
}

func serve(args []string) int {
	fs := flag.NewFlagSet("portcullis", flag.ContinueOnError)
	cfgPath := fs.String("config", os.Getenv("CONFIG_FILE_PATH"), "LiteLLM-compatible config file (default: the embedded mock config)")
	port := fs.Int("port", envInt("PORT", 4000), "port to listen on")
	host := fs.String("host", "0.0.0.0", "address to listen on")
	debug := fs.Bool("detailed_debug", false, "debug logging")
	fs.Bool("debug", false, "debug logging (same as --detailed_debug)")
	fs.Int("num_workers", 1, "accepted for LiteLLM compatibility; Portcullis uses all cores in one process")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if f := fs.Lookup("debug"); f != nil && f.Value.String() == "true" {
		*debug = true
	}
	cfg, err := load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	level := cfg.Log.Level
	if *debug {
		level = "debug"
	}
	log, err := telemetry.NewLogger(cfg.Log.Format, level)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	for _, w := range cfg.Warnings {
		log.Warn("config", zap.String("at", w.Path), zap.String("problem", w.Msg))
	}
	metrics := telemetry.NewMetrics()
	est := &lateHolder{}
	stk, err := openStack(cfg, log, est)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stk.close(log)
	stages, err := openStages(cfg, log, metrics)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stages.close()
	opts := gateway.Options{Log: log, Metrics: metrics, Keys: stk.keys}
	stages.apply(&opts)
	rt, err := gateway.Build(cfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	holder := gateway.NewHolder(rt)
	est.h = holder
	stages.holder = holder
	defer holder.Close()
	server.Version = version
	so := server.Options{Holder: holder, Log: log.Named("access"), Metrics: metrics, Settings: cfg.Server, StrictSpend: cfg.Spend.Strict,
		StorePrompts: cfg.Spend.StorePrompts}
	if stk.writer != nil {
		so.Spend = stk.writer
	}
	if stk.keys != nil {
		so.Keys = stk.keys
	}
	if stk.admin != nil {
		so.Admin = stk.admin.Handle
	}
	so.Ops = stages.ops()
	srv := server.New(so)
	addr := net.JoinHostPort(*host, strconv.Itoa(*port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("listen", zap.String("addr", addr), zap.Error(err))
		return 1
	}
	scheme := "http"
	if cfg.Server.TLSCertFile != "" {
		scheme = "https"
	}
	log.Info("portcullis listening", zap.String("addr", scheme+"://"+ln.Addr().String()), zap.String("config", cfg.Source),
		zap.String("storage", cfg.Storage.Path),
		zap.Int("models", len(rt.Router.Names())), zap.Bool("master_key", rt.Master != nil), zap.String("version", version))

	if addr := os.Getenv("PORTCULLIS_PPROF_ADDR"); addr != "" {
		servePprof(addr, log)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for {
		select {
		case err := <-errc:
			if err != nil {
				log.Error("serve", zap.Error(err))
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if *cfgPath == "" {
					log.Info("reload skipped: running on the embedded default config")
					continue
				}
				stages.reload(*cfgPath, log)
				if _, err := holder.Reload(*cfgPath, opts); err != nil {
					log.Error("reload failed; the previous configuration keeps serving", zap.Error(err))
				} else {
					log.Info("configuration reloaded", zap.String("config", *cfgPath))
				}
				continue
			}
			log.Info("shutting down: draining in-flight requests", zap.String("signal", sig.String()))
			if err := srv.Shutdown(); err != nil {
				log.Warn("shutdown bound reached; remaining connections closed", zap.Error(err))
			}
			log.Info("stopped")
			return 0
		}
	}
}

func load(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.LoadFile(path)
}

func validate(args []string) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" {
		fmt.Fprintln(os.Stderr, "validate: --config FILE is required")
		return 2
	}
	cfg, err := config.LoadFile(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	// The policies (and their own tests) load as they would when serving.
	st, err := openStages(cfg, zap.NewNop(), telemetry.NewMetrics())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.close()
	opts := gateway.Options{Log: zap.NewNop()}
	st.apply(&opts)
	rt, err := gateway.Build(cfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	h := gateway.NewHolder(rt)
	h.Close()
	fmt.Printf("%s: ok (%d models, %d deployments, %d warnings)\n", *cfgPath, len(rt.Router.Names()), len(cfg.Models), len(cfg.Warnings))
	return 0
}

func mockUpstream(args []string) int {
	fs := flag.NewFlagSet("mock-upstream", flag.ContinueOnError)
	port := fs.Int("port", 9000, "port")
	host := fs.String("host", "127.0.0.1", "address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	up, err := testupstream.Start(net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("mock upstream on %s (OpenAI-compatible at %s/v1, Anthropic at %s)\n", up.URL(), up.URL(), up.URL())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
	_ = up.Close()
	return 0
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}
