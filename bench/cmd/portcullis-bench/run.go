package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/bench/internal/hist"
	"github.com/portcullis/portcullis/bench/internal/loadgen"
	"github.com/portcullis/portcullis/bench/internal/procstat"
	"github.com/portcullis/portcullis/bench/internal/report"
)

// mode is the length of a run.
type mode struct {
	name string
	// rounds: every scenario is measured in rounds, each path in turn,
	// so that a burst of load from elsewhere on the machine hits every
	// path alike instead of one. Durations below are per round.
	rounds int
	// (a) pass-through, open loop
	warmup  time.Duration
	ptRate  float64
	ptDur   time.Duration
	ptConns int
	// max throughput, closed loop
	tpConns int
	tpWarm  time.Duration
	tpDur   time.Duration
	// (c) streaming, open loop
	stRate  float64
	stDur   time.Duration
	stConns int
	chunks  int
	gap     time.Duration
	// (e) idle streams
	idleN    int
	idleRamp float64
	idleHold time.Duration
	// (f) virtual keys in the database: one gateway per size, smallest
	// first, driven at kfRate spread over all its keys; run by default
	// only when keysByDefault (it does not fit in make bench's 3 minutes)
	keySizes      []int
	kfRate        float64
	keysByDefault bool
	// untrusted: (b) also measures its gateway with the plugin untrusted
	// (the default), at the fixed rate only (full mode, or -only with
	// pipeline: it does not fit in make bench's 3 minutes)
	untrusted bool
	// the whole run stops by itself after this
	maxRuntime time.Duration
}

var modes = map[string]mode{
	"short": {
		name: "short", rounds: 4, warmup: 300 * time.Millisecond, ptRate: 1000, ptDur: 1200 * time.Millisecond, ptConns: 32,
		tpConns: 64, tpWarm: 300 * time.Millisecond, tpDur: time.Second,
		stRate: 100, stDur: 1200 * time.Millisecond, stConns: 128, chunks: 50, gap: 5 * time.Millisecond,
		idleN: 10000, idleRamp: 2000, idleHold: 2 * time.Second,
		keySizes: []int{1000, 100000}, kfRate: 1000,
		maxRuntime: 4 * time.Minute,
	},
	"full": {
		name: "full", rounds: 10, warmup: time.Second, ptRate: 1000, ptDur: 5 * time.Second, ptConns: 32,
		tpConns: 64, tpWarm: time.Second, tpDur: 3 * time.Second,
		stRate: 100, stDur: 5 * time.Second, stConns: 128, chunks: 50, gap: 5 * time.Millisecond,
		idleN: 10000, idleRamp: 2000, idleHold: 10 * time.Second,
		keySizes: []int{1000, 100000, 1000000}, kfRate: 1000, keysByDefault: true, untrusted: true,
		maxRuntime: 30 * time.Minute,
	},
}

// target is one path under test.
type target struct {
	key, name string
	addr      string
	gateway   bool // speaks the gateway's model names
	proc      *child
	procLabel string
	// header lines sent with every request (the virtual key)
	header []string
	// vary: each request of (a)'s rounds and of the throughput run carries
	// its own number in the prompt ((b): see variedRequest)
	vary bool
	// (f): the gateway has keys virtual keys in its database; see keyset
	ks *keyset
	// traceAddr serves the hop's /debug/pprof/trace (-trace)
	traceAddr string
}

type bench struct {
	m      mode
	out    string
	up     *child
	direct *target
	bare   *target
	pc     *target
	pcWarn *target
	// pcAgainst is -against's gateway: another build measured in the same
	// rounds as pc in (a), the throughput run and (c); in no target
	pcAgainst  *target
	againstBin string
	// trace: -trace (firstbyte.go)
	trace bool
	// (e) also measures a gateway with server.reduce_memory
	pcMem *target
	// (b) the gateway with a master key, policies and a plugin, driven
	// with one virtual key; pcFullU is the same with the plugin untrusted
	pcFull, pcFullU *target
	// (d) the pass-through gateway with the response cache on
	pcCache *target
	// (b)'s policies (copied) and plugin module
	policySrc, plugin string
	// cacheBytes is the size of (d)'s answer from the cache
	cacheBytes int
	// (f) one gateway per size of the key table
	keyTargets []*target
	streams    int
	fdLimit    uint64
	sel        map[string]bool
	// bgStart is the share of the machine other processes used just
	// before the run.
	bgStart float64
	// gate's budget and what it spent
	gateInit             bool
	gateLeft, gateWaited time.Duration
	log                  func(format string, args ...any)
}

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	modeName := fs.String("mode", "short", "short (make bench, under 3 minutes) or full (make bench-full)")
	gwBin := fs.String("gateway", "bench/out/portcullis", "the portcullis binary to measure")
	against := fs.String("against", "", "another portcullis binary, measured with the same config in the same rounds as -gateway in (a), the throughput run and (c), for an A/B comparison (implies -write=false; judged in no target)")
	results := fs.String("results", "bench/RESULTS.md", "results file: compared against, then rewritten")
	outDir := fs.String("out", "bench/out", "directory for configs and process logs")
	strict := fs.Bool("strict", false, "exit 1 when a regression against the previous results is flagged")
	write := fs.Bool("write", true, "rewrite the results file with this run")
	pin := fs.Bool("pin", false, "pin the load generator and the fake upstream to the first half of the CPUs, the bare hop and the gateways to the second half, for A/B comparisons (implies -write=false; bench/README.md)")
	streams := fs.Int("streams", 0, "idle streams to hold (default 10000)")
	only := fs.String("only", "", "comma-separated scenarios to run: pass,tput,stream,idle,pipeline,cache,keys (implies -write=false)")
	policies := fs.String("policies", "policies/gateway", "the Rego policies (and their tests) (b)'s gateway loads, with the bench's data")
	plugin := fs.String("plugin", "plugins/pii-redact/pii-redact.wasm", "the Wasm plugin (b)'s gateway runs on_request (built by make plugins; built into -out if missing)")
	traceStages := fs.Bool("trace", false, "(c): take a Go execution trace of the bare hop and of the gateway during one round each and log a stream's first byte stage by stage inside each (implies -write=false; bench/README.md)")
	keySizes := fs.String("keys", "", "comma-separated key table sizes for (f); runs (f) in any mode, implies -write=false (default 1000,100000 short; 1000,100000,1000000 full)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sel := map[string]bool{"pass": true, "tput": true, "stream": true, "idle": true, "pipeline": true, "cache": true}
	if *only != "" {
		sel = map[string]bool{}
		for _, x := range strings.Split(*only, ",") {
			sel[strings.TrimSpace(x)] = true
		}
		*write = false
	}
	if *against != "" || *pin || *traceStages {
		*write = false
	}
	m, ok := modes[*modeName]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", *modeName)
		return 2
	}
	if *only == "" && m.keysByDefault {
		sel["keys"] = true
	}
	if *only != "" && sel["pipeline"] {
		m.untrusted = true
	}
	if *keySizes != "" {
		m.keySizes = nil
		for _, x := range strings.Split(*keySizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(x))
			if err != nil || n <= 0 || n > 1e9 {
				fmt.Fprintf(os.Stderr, "-keys: bad size %q\n", x)
				return 2
			}
			m.keySizes = append(m.keySizes, n)
		}
		slices.Sort(m.keySizes)
		sel["keys"] = true
		*write = false
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	// Everything stops by itself: on a signal, and after maxRuntime.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("%v: stopping", s)
		stopAll()
		os.Exit(130)
	}()
	time.AfterFunc(m.maxRuntime, func() {
		logf("run exceeded %v: stopping", m.maxRuntime)
		stopAll()
		os.Exit(3)
	})
	defer stopAll()

	limit := raiseNoFile()
	b := &bench{m: m, out: *outDir, log: logf, streams: m.idleN, sel: sel, policySrc: *policies, plugin: *plugin, againstBin: *against,
		trace: *traceStages}
	if *streams > 0 {
		b.streams = *streams
	}
	// The gateway holds two descriptors per stream, plus a few of its own.
	if maxStreams := (int(limit) - 100) / 2; b.streams > maxStreams {
		logf("RLIMIT_NOFILE is %d and cannot be raised here: holding %d idle streams instead of %d", limit, maxStreams, b.streams)
		b.streams = maxStreams
	}
	b.fdLimit = limit
	logf("RLIMIT_NOFILE %d (children inherit it)", limit)

	h := report.Header{
		Mode: m.name, Machine: cpuModel(), Cores: runtime.NumCPU(), Go: runtime.Version(),
		Commit: commit(), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"),
	}
	if err := b.setup(*gwBin); err != nil {
		logf("setup: %v", err)
		return 2
	}
	if *pin {
		if err := b.pin(); err != nil {
			logf("%v", err)
			return 2
		}
	}
	b.bgStart = b.waitQuiet()
	r, err := b.measure()
	if err != nil {
		logf("%v", err)
		return 2
	}
	stopAll()

	md, metrics := render(h, b, r)
	var prevNote string
	var regs []report.Regression
	if prev, err := os.ReadFile(*results); err == nil {
		ph, pm, err := report.ParseResults(string(prev))
		if err != nil {
			prevNote = fmt.Sprintf("The previous %s has no metrics line (%v): nothing compared.", *results, err)
		} else {
			var compared []string
			regs, compared = report.Compare(pm, metrics)
			prevNote = regressionSection(ph, h, regs, compared, pm, metrics)
		}
	} else {
		prevNote = fmt.Sprintf("No previous %s: nothing compared.", *results)
	}
	md += "\n## Regression check against the previous results\n\n" + prevNote + "\n\n" + report.MetricsLine(h, metrics) + "\n"
	fmt.Print(md)
	if *write {
		if err := os.WriteFile(*results, []byte(md), 0o644); err != nil {
			logf("write %s: %v", *results, err)
			return 2
		}
		logf("wrote %s", *results)
	}
	for _, g := range regs {
		fmt.Fprintln(os.Stderr, g.String())
	}
	if *strict && len(regs) > 0 {
		return 1
	}
	return 0
}

func regressionSection(ph, h report.Header, regs []report.Regression, compared []string, pm, cm report.Metrics) string {
	var s strings.Builder
	fmt.Fprintf(&s, "Previous run: %s, commit %s, mode %s, %s (%d cores).", ph.Date, ph.Commit, ph.Mode, ph.Machine, ph.Cores)
	if ph.Mode != h.Mode || ph.Machine != h.Machine || ph.Cores != h.Cores {
		s.WriteString(" It was another mode or machine: the comparison is only indicative.")
	}
	fmt.Fprintf(&s, " A metric is flagged when it is more than %.0f%% worse (relative to the previous value, or to a small floor for near-zero added latencies).\n\n", 100*report.Threshold)
	if len(compared) == 0 {
		s.WriteString("No metric in common with the previous run.")
		return s.String()
	}
	s.WriteString("| metric | previous | this run | change |\n|---|---|---|---|\n")
	flag := map[string]bool{}
	for _, r := range regs {
		flag[r.Rule.Key] = true
	}
	for _, rule := range report.Rules {
		o, ok1 := pm[rule.Key]
		n, ok2 := cm[rule.Key]
		if !ok1 || !ok2 {
			continue
		}
		ch := "—"
		if o != 0 {
			ch = fmt.Sprintf("%+.1f%%", 100*(n-o)/absf(o))
		}
		if flag[rule.Key] {
			ch += " **REGRESSION**"
		}
		fmt.Fprintf(&s, "| %s | %.4g | %.4g | %s |\n", rule.Label, o, n, ch)
	}
	if len(regs) == 0 {
		s.WriteString("\nNo regression flagged.")
	} else {
		fmt.Fprintf(&s, "\n%d regression(s) flagged.", len(regs))
	}
	return s.String()
}

func absf(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// setup starts the fake upstream, the bare hop and the gateways the
// selected scenarios need.
func (b *bench) setup(gwBin string) error {
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(gwBin); err != nil {
		return fmt.Errorf("gateway binary: %w (build it with go build -o %s ./cmd/portcullis)", err, gwBin)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	upPort, err := freePort()
	if err != nil {
		return err
	}
	bareAddr, err := freeAddr()
	if err != nil {
		return err
	}
	upAddr := hostPort(upPort)
	life := (b.m.maxRuntime + time.Minute).String()

	listen := upAddr
	for _, h := range idleHosts {
		listen += "," + net.JoinHostPort(h, strconv.Itoa(upPort))
	}
	b.up, err = start("fake upstream", "", filepath.Join(b.out, "upstream.log"), self, "upstream", "-listen", listen,
		"-chunks", fmt.Sprint(b.m.chunks), "-gap", b.m.gap.String(), "-idle-gap", "60s", "-lifetime", life)
	if err != nil {
		return err
	}
	if err := waitTCP(b.up, upAddr, 10*time.Second); err != nil {
		return err
	}
	bareArgs := []string{"bare-hop", "-listen", bareAddr, "-upstream", upAddr, "-lifetime", life}
	var bareTrace string
	if b.trace {
		if bareTrace, err = freeAddr(); err != nil {
			return err
		}
		bareArgs = append(bareArgs, "-pprof", bareTrace)
	}
	bare, err := start("bare hop", "", filepath.Join(b.out, "bare-hop.log"), self, bareArgs...)
	if err != nil {
		return err
	}
	if err := waitTCP(bare, bareAddr, 10*time.Second); err != nil {
		return err
	}
	b.direct = &target{key: "direct", name: "direct", addr: upAddr, proc: b.up, procLabel: "fake upstream"}
	b.bare = &target{key: "bare", name: "bare hop", addr: bareAddr, proc: bare, procLabel: "bare hop", traceAddr: bareTrace}
	all := []*target{b.direct, b.bare}
	// (b)'s gateways load their policies for a few seconds: they start
	// while the others do.
	pipeDone := make(chan error, 1)
	if b.sel["pipeline"] {
		if b.plugin, err = b.pluginModule(b.plugin); err != nil {
			return err
		}
		go func() {
			var err error
			if b.pcFull, err = b.startPipelineGateway(gwBin, upPort, true); err == nil && b.m.untrusted {
				b.pcFullU, err = b.startPipelineGateway(gwBin, upPort, false)
			}
			pipeDone <- err
		}()
	} else {
		pipeDone <- nil
	}
	err = b.startOtherGateways(gwBin, upPort, &all)
	if perr := <-pipeDone; err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	for _, t := range []*target{b.pcFull, b.pcFullU} {
		if t != nil {
			all = append(all, t)
		}
	}
	if b.sel["cache"] {
		all = append(all, b.pcCache)
	}
	if b.sel["keys"] {
		for _, n := range b.m.keySizes {
			t, err := b.startKeysGateway(gwBin, self, upPort, n)
			if err != nil {
				return err
			}
			b.keyTargets = append(b.keyTargets, t)
			all = append(all, t)
		}
	}
	// One JSON and one streamed request through every path before
	// measuring anything.
	for _, t := range all {
		if err := b.probe(t); err != nil {
			return err
		}
	}
	if b.sel["cache"] {
		if err := b.probeCache(); err != nil {
			return err
		}
	}
	var desc []string
	for _, t := range all {
		desc = append(desc, fmt.Sprintf("%s %s (pid %d)", t.name, t.addr, t.proc.pid()))
	}
	b.log("%s", strings.Join(desc, ", "))
	return nil
}

// startOtherGateways starts (a)'s gateways and (d)'s, those the selected
// scenarios need, appending (a)'s to all.
func (b *bench) startOtherGateways(gwBin string, upPort int, all *[]*target) (err error) {
	if b.sel["pass"] || b.sel["tput"] || b.sel["stream"] || b.sel["idle"] || b.sel["cache"] {
		o := gwOpts{upPort: upPort, idleHost: idleHosts[0]}
		if b.trace {
			if o.pprofAddr, err = freeAddr(); err != nil {
				return err
			}
		}
		if b.pc, err = b.startGateway(gwBin, "portcullis", o); err != nil {
			return err
		}
		b.pc.traceAddr = o.pprofAddr
		b.pc.key, b.pc.name = "pc", "portcullis"
		*all = append(*all, b.pc)
		if b.againstBin != "" {
			o := gwOpts{upPort: upPort, idleHost: idleHosts[0]}
			if b.trace {
				if o.pprofAddr, err = freeAddr(); err != nil {
					return err
				}
			}
			if b.pcAgainst, err = b.startGateway(b.againstBin, "portcullis-against", o); err != nil {
				return err
			}
			b.pcAgainst.traceAddr = o.pprofAddr
			b.pcAgainst.key, b.pcAgainst.name = "pcagainst", "portcullis (-against)"
			*all = append(*all, b.pcAgainst)
		}
	}
	if b.sel["idle"] {
		if b.pcMem, err = b.startGateway(gwBin, "portcullis-mem", gwOpts{upPort: upPort, reduceMemory: true, idleHost: idleHosts[1]}); err != nil {
			return err
		}
		b.pcMem.key, b.pcMem.name = "pcmem", "portcullis (server.reduce_memory)"
		*all = append(*all, b.pcMem)
	}
	if b.sel["pass"] || b.sel["tput"] {
		if b.pcWarn, err = b.startGateway(gwBin, "portcullis-warn", gwOpts{upPort: upPort, level: "warn"}); err != nil {
			return err
		}
		b.pcWarn.key, b.pcWarn.name = "pcwarn", "portcullis (log: warn)"
		*all = append(*all, b.pcWarn)
	}
	if b.sel["cache"] {
		if b.pcCache, err = b.startGateway(gwBin, "portcullis-cache", gwOpts{upPort: upPort, cache: true}); err != nil {
			return err
		}
		b.pcCache.key, b.pcCache.name = "pccache", "portcullis cache hit"
	}
	return nil
}

// gwOpts is what differs between the gateways' configs.
type gwOpts struct {
	upPort int
	level  string // portcullis.log.level; "" = default (info)
	master string // general_settings.master_key; "" = none (no authentication)
	// cacheKeys is portcullis.auth.key_cache_size; 0 = default
	cacheKeys int
	// policyDir is portcullis.policy.dir; "" = no policies
	policyDir string
	// plugin is the module of one portcullis.plugins entry running
	// on_request, trusted or not; "" = no plugin
	plugin  string
	trusted bool
	// cache turns the response cache on (litellm_settings.cache)
	cache bool
	// reduceMemory is portcullis.server.reduce_memory
	reduceMemory bool
	// idleHost is the fake upstream's address for (e)'s streams (one of
	// idleHosts); "" = 127.0.0.1
	idleHost string
	// pprofAddr is the gateway's PORTCULLIS_PPROF_ADDR; "" = inherited
	pprofAddr string
}

// idleHosts are the fake upstream's extra addresses, one per gateway that
// holds (e)'s idle streams (the bare hop uses 127.0.0.1).
var idleHosts = []string{"127.0.0.2", "127.0.0.3"}

// benchPrice is what the gateways with a master key charge for the
// deployment (gpt-4o's list price), so that budgets reserve and settle
// real amounts and spend totals are updated; without it openai/bench has
// no price and every request costs 0.
const benchPrice = `
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001`

// gatewayConfig is the LiteLLM config the gateway runs with.
func gatewayConfig(o gwOpts) string {
	price := ""
	if o.master != "" {
		price = benchPrice
	}
	idleHost := o.idleHost
	if idleHost == "" {
		idleHost = "127.0.0.1"
	}
	s := fmt.Sprintf(`# written by portcullis-bench
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_key: sk-bench
      api_base: http://127.0.0.1:%d/v1%s
  - model_name: bench-idle
    litellm_params:
      model: openai/bench
      api_key: sk-bench
      api_base: http://%s:%d/idle/v1%s
  - model_name: bench-large
    litellm_params:
      model: openai/bench
      api_key: sk-bench
      api_base: http://127.0.0.1:%d/large/v1%s
`, o.upPort, price, idleHost, o.upPort, price, o.upPort, price)
	if o.cache {
		s += "litellm_settings:\n  cache: true\n"
	}
	if o.master != "" {
		s += "general_settings:\n  master_key: " + o.master + "\n"
	}
	if o.level != "" || o.cacheKeys > 0 || o.policyDir != "" || o.plugin != "" || o.reduceMemory {
		s += "portcullis:\n"
	}
	if o.reduceMemory {
		s += "  server:\n    reduce_memory: true\n"
	}
	if o.level != "" {
		s += "  log:\n    level: " + o.level + "\n"
	}
	if o.cacheKeys > 0 {
		s += fmt.Sprintf("  auth:\n    key_cache_size: %d\n", o.cacheKeys)
	}
	if o.policyDir != "" {
		s += fmt.Sprintf("  policy:\n    dir: %q\n", o.policyDir)
	}
	if o.plugin != "" {
		// pii-redact on the prompt only: it scans every message and, for
		// the bench prompt, changes nothing.
		s += fmt.Sprintf("  plugins:\n    - name: pii-redact\n      module: %q\n      hooks: [on_request]\n      failure_policy: fail_closed\n", o.plugin)
		if o.trusted {
			s += "      trusted: true\n"
		}
	}
	return s
}

// runDir returns a fresh, empty working directory for the gateway name,
// bench/out/run-<name>/: whatever it keeps there by default (its SQLite file
// of keys and spend records) starts empty on every run and never lands in
// the repository's root.
func (b *bench) runDir(name string) (string, error) {
	dir, err := filepath.Abs(filepath.Join(b.out, "run-"+name))
	if err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// startGateway runs a gateway with its config in a fresh working
// directory, and returns it as a target (key and name to be set).
func (b *bench) startGateway(bin, name string, o gwOpts) (*target, error) {
	dir, err := b.runDir(name)
	if err != nil {
		return nil, err
	}
	return b.launchGateway(bin, name, dir, o)
}

// launchGateway runs a gateway in dir, which may already hold its database.
func (b *bench) launchGateway(bin, name, dir string, o gwOpts) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(gatewayConfig(o)), 0o644); err != nil {
		return nil, err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	var env []string
	if o.pprofAddr != "" {
		env = []string{"PORTCULLIS_PPROF_ADDR=" + o.pprofAddr}
	}
	c, err := startEnv(name, dir, filepath.Join(b.out, name+".log"), env, bin, "--config", cfg, "--port", fmt.Sprint(port), "--host", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	if err := waitReady(c, hostPort(port), 60*time.Second); err != nil {
		return nil, err
	}
	return &target{addr: hostPort(port), gateway: true, proc: c, procLabel: "portcullis"}, nil
}

func freeAddr() (string, error) {
	p, err := freePort()
	return hostPort(p), err
}

const chatBody = `{"model":%q,"messages":[{"role":"system","content":"You are a helpful assistant."},` +
	`{"role":"user","content":%q}],"temperature":0.2,"max_tokens":64%s}`

// The user message; a target that varies its prompt numbers it.
const (
	userText         = "Say hello to the benchmark, briefly."
	userTextNumbered = "Say hello to the benchmark, briefly (request " + requestNumber + ")."
)

// request is the request sent to t.
func (b *bench) request(t *target, stream, idle bool) loadgen.Target {
	model, path, extra := "bench", "/v1/chat/completions", ""
	if stream {
		extra = `,"stream":true`
	}
	if idle {
		if t.gateway {
			model = "bench-idle"
		} else {
			path = "/idle/v1/chat/completions"
		}
	}
	// No Authorization header except to the gateways with a master key
	// ((b), (f)): the others serve anonymous callers, and a bearer they do
	// not know would be rejected as an invalid virtual key.
	text := userText
	if t.vary {
		text = userTextNumbered
	}
	return loadgen.Target{Name: t.name, Addr: t.addr, Path: path, Body: fmt.Appendf(nil, chatBody, model, text, extra), Header: t.header}
}

// probe checks that t answers a JSON and a streamed request correctly.
func (b *bench) probe(t *target) error {
	for _, stream := range []bool{false, true} {
		req := b.request(t, stream, false)
		c, err := loadgen.Dial(req.Addr, nil, req.RequestBytes(), 0)
		if err != nil {
			return fmt.Errorf("probe %s: %w", t.name, err)
		}
		data, done := 0, false
		_ = c.Send(loadgen.Now())
		status, _, err := c.ReadResponse(func(k loadgen.EventKind, _ time.Duration) bool {
			data += map[bool]int{true: 1}[k == loadgen.EventData]
			done = done || k == loadgen.EventDone
			return true
		})
		_ = c.Close()
		switch {
		case err != nil:
			return fmt.Errorf("probe %s (stream=%v): %w (see %s)", t.name, stream, err, t.proc.log)
		case status != 200:
			return fmt.Errorf("probe %s (stream=%v): HTTP %d (see %s)", t.name, stream, status, t.proc.log)
		case stream && (data != b.m.chunks || !done):
			return fmt.Errorf("probe %s: stream had %d data events (done=%v), want %d", t.name, data, done, b.m.chunks)
		}
	}
	return nil
}

// window samples, at the start and end of a measurement window, the CPU
// time of the target and the upstream, of all the run's processes, and of
// the whole machine (to tell how much other processes took), and the
// target's memory at the end.
type window struct {
	mu     sync.Mutex
	pids   []int
	c0, c1 []procstat.CPU
	mem    []procstat.Mem
	io     [2]procstat.IO // the first process's, at the start and the end
	o0, o1 time.Duration  // the run's processes, generator included
	g0, g1 procstat.CPU   // the generator (this process)
	s0, s1 procstat.System
}

func newWindow(pids ...int) *window {
	return &window{pids: pids, c0: make([]procstat.CPU, len(pids)), c1: make([]procstat.CPU, len(pids)), mem: make([]procstat.Mem, len(pids))}
}

// ours is the CPU time of every process of the run.
func ours() (total time.Duration, self procstat.CPU) {
	self, _ = procstat.ReadCPU(os.Getpid())
	total = self.Sched
	childrenMu.Lock()
	cs := append([]*child(nil), children...)
	childrenMu.Unlock()
	for _, c := range cs {
		if cpu, err := procstat.ReadCPU(c.pid()); err == nil {
			total += max(cpu.Sched, cpu.Ticks)
		}
	}
	return total, self
}

func (w *window) on(startWin bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, p := range w.pids {
		c, _ := procstat.ReadCPU(p)
		if i == 0 {
			k := 1
			if startWin {
				k = 0
			}
			w.io[k], _ = procstat.ReadIO(p)
		}
		if startWin {
			w.c0[i] = c
		} else {
			w.c1[i] = c
			w.mem[i], _ = procstat.ReadMem(p)
		}
	}
	o, g := ours()
	s, _ := procstat.ReadSystem()
	if startWin {
		w.o0, w.g0, w.s0 = o, g, s
	} else {
		w.o1, w.g1, w.s1 = o, g, s
	}
}

func (w *window) cpu(i int) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.c1[i].Since(w.c0[i])
}

// load returns the share of the machine's CPU time that processes outside
// the run used during the window, the hypervisor's steal, and the
// generator's own CPU time.
func (w *window) load() (background, steal float64, gen time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	total := w.s1.Total - w.s0.Total
	gen = w.g1.Since(w.g0)
	if total <= 0 {
		return 0, 0, gen
	}
	bg := float64(w.s1.Busy-w.s0.Busy-(w.o1-w.o0)) / float64(total)
	return max(bg, 0), float64(w.s1.Steal-w.s0.Steal) / float64(total), gen
}

// side is one target's result in one scenario.
type side struct {
	t     *target
	res   *loadgen.Result
	cpu   time.Duration // the target's own process over the window
	upCPU time.Duration // the fake upstream over the window
	mem   procstat.Mem
	// written is what the target's process wrote to its files over the
	// window (/proc/<pid>/io write_bytes).
	written int64
	// bg and steal are the shares of the machine taken by other processes
	// and by the hypervisor during the window; gen is the generator's CPU.
	bg, steal float64
	gen       time.Duration
	// ttfbRounds is each round's TTFB p50 (µs), in round order; streams only.
	ttfbRounds []float64
}

func newSide(t *target, res *loadgen.Result, w *window) *side {
	s := &side{t: t, res: res, cpu: w.cpu(0), upCPU: w.cpu(1), mem: w.mem[0], written: w.io[1].WriteBytes - w.io[0].WriteBytes}
	s.bg, s.steal, s.gen = w.load()
	if res.TTFB != nil && res.TTFB.Count() > 0 {
		s.ttfbRounds = []float64{float64(res.TTFB.Quantile(.5)) / 1e3}
	}
	return s
}

// merge adds another round of the same target.
func (s *side) merge(o *side) {
	s.ttfbRounds = append(s.ttfbRounds, o.ttfbRounds...)
	s.res.Merge(o.res)
	s.cpu += o.cpu
	s.upCPU += o.upCPU
	s.written += o.written
	s.gen += o.gen
	s.mem = o.mem
	s.bg, s.steal = max(s.bg, o.bg), max(s.steal, o.steal)
}

// n is the number of requests (or streams) of the window.
func (s *side) n() int64 { return s.res.OK + s.res.Errors }

// cpuPerReq is in microseconds.
func (s *side) cpuPerReq() float64 {
	if s.n() == 0 {
		return 0
	}
	return float64(s.cpu) / 1e3 / float64(s.n())
}

func (s *side) upCPUPerReq() float64 {
	if s.n() == 0 {
		return 0
	}
	return float64(s.upCPU) / 1e3 / float64(s.n())
}

// idleSide is one target's idle-stream result.
type idleSide struct {
	t           *target
	want        int
	established int64
	failed      int64
	firstErr    string
	elapsed     time.Duration
	before      procstat.Mem
	with        procstat.Mem
	after       procstat.Mem
	idleCPU     time.Duration // over hold
	hold        time.Duration
	// rt0 and rt are the gateway's Go runtime gauges (from /metrics)
	// before and while holding the streams; nil for the bare hop.
	rt0, rt map[string]float64
}

// projected is the RSS at n streams, extrapolated from the growth per
// established stream.
func (s *idleSide) projected(n int) int64 {
	if s.established == 0 {
		return s.with.RSS
	}
	per := float64(s.with.RSS-s.before.RSS) / float64(s.established)
	return s.before.RSS + int64(per*float64(n))
}

type results struct {
	pass   []*side
	tput   []*side
	stream []*side
	idle   []*idleSide
	keys   []*side
	cache  []*side
	// cacheCalls is, per target of (d), the chat requests the fake
	// upstream served during its rounds (warm-up included)
	cacheCalls map[string]int64
	// scraped is the /metrics of the gateways of (b) and (d) at the end of
	// the scenarios, by target key
	scraped map[string]map[string]float64
}

func (b *bench) measure() (*results, error) {
	r := &results{}
	steps := []struct {
		key string
		fn  func(*results) error
		on  bool
	}{{"pass", b.passThrough, b.sel["pass"] || b.sel["pipeline"]}, {"tput", b.throughput, b.sel["tput"] || b.sel["pipeline"]},
		{"cache", b.cacheHit, b.sel["cache"]},
		{"stream", b.streaming, b.sel["stream"]}, {"idle", b.idleStreams, b.sel["idle"]}, {"keys", b.keyLookup, b.sel["keys"]}}
	for _, st := range steps {
		if st.on {
			if err := st.fn(r); err != nil {
				return nil, err
			}
		}
	}
	r.scraped = map[string]map[string]float64{}
	for _, t := range []*target{b.pcFull, b.pcFullU, b.pcCache} {
		if t != nil {
			r.scraped[t.key] = scrapeMetrics(t.addr)
		}
	}
	return r, nil
}

// rounds measures each target in turn, m.rounds times, with fn running
// one round for one target; the rounds of a target are merged.
func (b *bench) rounds(targets []*target, fn func(t *target, w *window) (*loadgen.Result, error), logLine func(s *side) string) ([]*side, error) {
	sides := make([]*side, len(targets))
	for round := 0; round < b.m.rounds; round++ {
		// The order rotates from round to round, so that no path always
		// follows the same one (a path's round can be slower for coming
		// after another's: see README, Warm-up and rounds).
		for k := range targets {
			i := (k + round) % len(targets)
			t := targets[i]
			b.gate()
			w := newWindow(t.proc.pid(), b.up.pid())
			res, err := fn(t, w)
			if err != nil {
				return nil, err
			}
			s := newSide(t, res, w)
			if sides[i] == nil {
				sides[i] = s
			} else {
				sides[i].merge(s)
			}
			// The gate's 200 ms sample before the next round is the pause
			// between two rounds; once its budget is spent, pause here.
			if b.gateLeft <= 0 {
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	for _, s := range sides {
		b.log("  %-24s %s  (other processes up to %.0f%%, steal up to %.0f%%)", s.t.name, logLine(s), 100*s.bg, 100*s.steal)
	}
	return sides, nil
}

// gatewayPaths are the gateways measured in (a) and the throughput run:
// (a)'s two when pass (or tput) is selected, (b)'s when pipeline is.
func (b *bench) gatewayPaths(scenario string) []*target {
	ts := []*target{b.direct, b.bare}
	if b.sel[scenario] {
		ts = append(ts, b.pc, b.pcWarn)
		if b.pcAgainst != nil {
			ts = append(ts, b.pcAgainst)
		}
	}
	if b.sel["pipeline"] {
		ts = append(ts, b.pcFull)
		if b.pcFullU != nil && scenario == "pass" {
			ts = append(ts, b.pcFullU)
		}
	}
	return ts
}

// passThrough is scenario (a) and the fixed-rate part of (b): JSON chat at
// a fixed rate.
func (b *bench) passThrough(r *results) (err error) {
	m := b.m
	b.log("(a)/(b) pass-through and full pipeline: open loop %v req/s, %d rounds of %v (after %v warm-up) per path, %d connections", m.ptRate, m.rounds, m.ptDur, m.warmup, m.ptConns)
	r.pass, err = b.rounds(b.gatewayPaths("pass"), func(t *target, w *window) (*loadgen.Result, error) {
		return loadgen.RunOpen(loadgen.OpenConfig{
			Target: b.request(t, false, false), Rate: m.ptRate, Warmup: m.warmup, Duration: m.ptDur,
			Conns: m.ptConns, OnWindow: w.on, Request: b.build(t),
		})
	}, func(s *side) string {
		return fmt.Sprintf("p50 %s p99 %s  CPU/req %s  errors %d %s", us(s.res.Latency.Quantile(.5)), us(s.res.Latency.Quantile(.99)), usf(s.cpuPerReq()), s.res.Errors, s.res.FirstErr)
	})
	return err
}

// throughput is the closed-loop maximum.
func (b *bench) throughput(r *results) (err error) {
	m := b.m
	b.log("max throughput: closed loop, %d connections, %d rounds of %v (after %v warm-up) per path", m.tpConns, m.rounds, m.tpDur, m.tpWarm)
	r.tput, err = b.rounds(b.gatewayPaths("tput"), func(t *target, w *window) (*loadgen.Result, error) {
		return loadgen.RunClosed(loadgen.ClosedConfig{
			Target: b.request(t, false, false), Conns: m.tpConns, Warmup: m.tpWarm, Duration: m.tpDur, OnWindow: w.on,
			Request: b.build(t),
		})
	}, func(s *side) string {
		return fmt.Sprintf("%.0f req/s  p50 %s p99 %s  CPU/req %s  errors %d %s", s.res.Throughput(), us(s.res.Latency.Quantile(.5)), us(s.res.Latency.Quantile(.99)), usf(s.cpuPerReq()), s.res.Errors, s.res.FirstErr)
	})
	return err
}

// streaming is scenario (c).
func (b *bench) streaming(r *results) (err error) {
	m := b.m
	b.log("(c) streaming: %d chunks %v apart, open loop %v streams/s, %d rounds of %v per path", m.chunks, m.gap, m.stRate, m.rounds, m.stDur)
	run := func(t *target, rate float64, w *window) (*loadgen.Result, error) {
		return loadgen.RunOpen(loadgen.OpenConfig{
			Target: b.request(t, true, false), Rate: rate, Warmup: m.warmup, Duration: m.stDur,
			Conns: m.stConns, OnWindow: w.on, Drain: 10 * time.Second,
			Stream: &loadgen.StreamSpec{Chunks: m.chunks, Gap: m.gap},
		})
	}
	traced := map[*target]int{}
	r.stream, err = b.rounds([]*target{b.direct, b.bare, b.pc}, func(t *target, w *window) (*loadgen.Result, error) {
		traced[t]++
		if t.traceAddr != "" && traced[t] == 2 {
			done := b.startTrace(t)
			defer done()
		}
		return run(t, m.stRate, w)
	}, func(s *side) string {
		res := s.res
		return fmt.Sprintf("TTFB p50 %s p99 %s (p50 by round %.0f µs)  gap p50 %s p99 %s  held back %d/%d  errors %d %s",
			us(res.TTFB.Quantile(.5)), us(res.TTFB.Quantile(.99)), s.ttfbRounds, us(res.Gap.Quantile(.5)), us(res.Gap.Quantile(.99)),
			res.HeldBack, res.Gaps, res.Errors, res.FirstErr)
	})
	if err != nil || b.pcAgainst == nil {
		return err
	}
	return b.streamSideBySide(run)
}

// streamSideBySide is (c) for -against: the two builds at the same time,
// each at half the rate, so that both see the same machine (the rounds
// give each path its own, and the machine changes from one to the next).
// It logs each build's TTFB p50, pooled and round by round.
func (b *bench) streamSideBySide(run func(t *target, rate float64, w *window) (*loadgen.Result, error)) error {
	m := b.m
	b.log("(c) -against: %s and %s at the same time, %v streams/s each, %d rounds of %v", b.pc.name, b.pcAgainst.name, m.stRate/2, m.rounds, m.stDur)
	var x, y, diff []float64
	var hx, hy *hist.Histogram
	for round := 0; round < m.rounds; round++ {
		b.gate()
		var tx, ty func() []stageRow
		if b.trace && round == 1 {
			tx, ty = b.startTrace(b.pc), b.startTrace(b.pcAgainst)
		}
		var ry *loadgen.Result
		var ey error
		done := make(chan struct{})
		go func() {
			defer close(done)
			ry, ey = run(b.pcAgainst, m.stRate/2, newWindow(b.pcAgainst.proc.pid()))
		}()
		rx, ex := run(b.pc, m.stRate/2, newWindow(b.pc.proc.pid()))
		<-done
		if tx != nil {
			b.logStageDiff(b.pc.name, b.pcAgainst.name, tx(), ty())
		}
		if err := errors.Join(ex, ey); err != nil {
			return err
		}
		px, py := float64(rx.TTFB.Quantile(.5))/1e3, float64(ry.TTFB.Quantile(.5))/1e3
		x, y, diff = append(x, px), append(y, py), append(diff, py-px)
		if hx == nil {
			hx, hy = rx.TTFB, ry.TTFB
		} else {
			hx.Merge(rx.TTFB)
			hy.Merge(ry.TTFB)
		}
	}
	b.log("  TTFB p50 %s vs %s (-against minus -gateway %+.0f µs); p50 by round (µs) %.0f vs %.0f, differences %.0f",
		us(hx.Quantile(.5)), us(hy.Quantile(.5)), float64(hy.Quantile(.5)-hx.Quantile(.5))/1e3, x, y, diff)
	return nil
}

// idleStreams is scenario (e).
func (b *bench) idleStreams(r *results) error {
	b.log("(e) %d idle streams, opened at %v/s from 8 loopback addresses, held %v", b.streams, b.m.idleRamp, b.m.idleHold)
	for _, t := range []*target{b.bare, b.pc, b.pcMem} {
		s, err := b.idle(t)
		if err != nil {
			return err
		}
		r.idle = append(r.idle, s)
		b.log("  %-24s established %d/%d in %v  RSS %s -> %s (after close %s)  %s", t.name, s.established, s.want,
			s.elapsed.Round(time.Millisecond), mib(s.before.RSS), mib(s.with.RSS), mib(s.after.RSS), s.firstErr)
	}
	return nil
}

// gate delays a round by up to 2 s while other processes use more than a
// quarter of the machine, within a budget for the whole run (8 s short,
// 3 min full). The paths take turns, so this favours none of them; it
// only avoids starting a round in the middle of someone's build.
func (b *bench) gate() {
	if b.gateLeft == 0 && !b.gateInit {
		b.gateInit = true
		// 8 s: make bench must stay under 3 minutes on a busy machine
		b.gateLeft = 8 * time.Second
		if b.m.name == "full" {
			b.gateLeft = 3 * time.Minute
		}
	}
	for waited := time.Duration(0); waited < 2*time.Second && b.gateLeft > 0; {
		w := newWindow()
		w.on(true)
		time.Sleep(200 * time.Millisecond)
		w.on(false)
		if bg, _, _ := w.load(); bg < 0.25 {
			return
		}
		waited += 200 * time.Millisecond
		b.gateLeft -= 200 * time.Millisecond
		b.gateWaited += 200 * time.Millisecond
	}
}

// waitQuiet waits (a bounded time) for other processes to leave the
// machine mostly idle, and returns the share of it they used in the last
// second sampled.
func (b *bench) waitQuiet() float64 {
	maxWait := 3 * time.Second
	if b.m.name == "full" {
		maxWait = 2 * time.Minute
	}
	deadline := time.Now().Add(maxWait)
	for {
		w := newWindow()
		w.on(true)
		time.Sleep(time.Second)
		w.on(false)
		bg, _, _ := w.load()
		if bg < 0.15 {
			return bg
		}
		if time.Now().After(deadline) {
			b.log("other processes still use %.0f%% of the machine: measuring anyway (the numbers will be noisy)", 100*bg)
			return bg
		}
		b.log("other processes use %.0f%% of the machine: waiting for it to quieten (up to %v)", 100*bg, maxWait)
		time.Sleep(2 * time.Second)
	}
}

// localIPs are the source addresses idle streams are spread over.
func localIPs() []net.IP {
	var ips []net.IP
	for i := 1; i <= 8; i++ {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i)))
	}
	return ips
}

func (b *bench) idle(t *target) (*idleSide, error) {
	pid := t.proc.pid()
	s := &idleSide{t: t, want: b.streams, hold: b.m.idleHold}
	s.before, _ = procstat.ReadMem(pid)
	if t.gateway {
		s.rt0 = scrapeRuntime(t.addr)
	}
	h := loadgen.HoldStreams(loadgen.IdleConfig{
		Target: b.request(t, true, true), N: b.streams, Ramp: b.m.idleRamp, LocalIPs: localIPs(), Timeout: 60 * time.Second,
	})
	defer h.Close()
	s.established, s.failed, s.firstErr, s.elapsed = h.Established.Load(), h.Failed.Load(), h.FirstErr(), h.Elapsed
	time.Sleep(time.Second) // let the last streams settle
	c0, _ := procstat.ReadCPU(pid)
	time.Sleep(b.m.idleHold)
	c1, _ := procstat.ReadCPU(pid)
	s.idleCPU = c1.Since(c0)
	s.with, _ = procstat.ReadMem(pid)
	if t.gateway {
		s.rt = scrapeRuntime(t.addr)
		b.saveProfiles(t, "idle")
	}
	if t.proc.exited() {
		return s, errors.New(t.name + " exited while holding idle streams; see " + t.proc.log)
	}
	h.Close()
	// End the upstream side too: a hop notices a gone client only at its
	// next write, and its upstream connections would otherwise hold the
	// loopback ports the next side needs.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://"+b.direct.addr+"/idle/release", "text/plain", nil); err == nil {
		resp.Body.Close()
	}
	time.Sleep(2 * time.Second)
	s.after, _ = procstat.ReadMem(pid)
	return s, nil
}

// saveProfiles writes the gateway's heap and goroutine profiles into the
// output directory as <what>-<target>-heap.pprof and -goroutine.pprof when
// PORTCULLIS_PPROF_ADDR is set (the gateways inherit it; the first one
// started serves Go's profiling endpoints there, so run one scenario, e.g.
// -only idle). For work on memory: go tool pprof -sample_index=inuse_space.
func (b *bench) saveProfiles(t *target, what string) {
	addr := os.Getenv("PORTCULLIS_PPROF_ADDR")
	if addr == "" {
		return
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	for _, p := range []string{"heap", "goroutine"} {
		resp, err := cl.Get("http://" + addr + "/debug/pprof/" + p)
		if err != nil {
			b.log("  profile %s: %v", p, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			b.log("  profile %s: HTTP %d %v", p, resp.StatusCode, err)
			continue
		}
		f := filepath.Join(b.out, what+"-"+t.key+"-"+p+".pprof")
		if err := os.WriteFile(f, body, 0o644); err == nil {
			b.log("  profile %s written to %s", p, f)
		}
	}
}

// runtimeGauges are the Go runtime gauges read from the gateway's /metrics.
var runtimeGauges = []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_next_gc_bytes"}

// scrapeRuntime reads runtimeGauges from http://addr/metrics.
func scrapeRuntime(addr string) map[string]float64 {
	all := scrapeMetrics(addr)
	if all == nil {
		return nil
	}
	out := map[string]float64{}
	for _, name := range runtimeGauges {
		if v, ok := all[name]; ok {
			out[name] = v
		}
	}
	return out
}

// scrapeMetrics reads every sample of http://addr/metrics, keyed by its
// name with its labels as written (`name{a="x",b="y"}`).
func scrapeMetrics(addr string) map[string]float64 {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	return parseMetrics(string(body))
}

// parseMetrics parses the Prometheus text format's samples (no timestamps).
func parseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(l[i+1:]), 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// sumMetric adds the samples of name whose labels contain every one of
// labels (each `k="v"`).
func sumMetric(m map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for k, v := range m {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			sum += v
		}
	}
	return sum
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// commit is the short HEAD, marked when the work tree has changes other
// than bench/RESULTS.md (which the previous run rewrote).
func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if exec.Command("git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)bench/RESULTS.md").Run() != nil {
		c += " (with uncommitted changes)"
	}
	return c
}
