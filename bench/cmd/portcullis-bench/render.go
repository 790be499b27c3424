package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/portcullis/portcullis/bench/internal/hist"
	"github.com/portcullis/portcullis/bench/internal/report"
	"github.com/portcullis/portcullis/bench/internal/upstream"
)

// us formats nanoseconds.
func us(ns int64) string { return usf(float64(ns) / 1e3) }

// usf formats microseconds.
func usf(v float64) string {
	switch a := math.Abs(v); {
	case a >= 10000:
		return fmt.Sprintf("%.1f ms", v/1e3)
	case a >= 1000:
		return fmt.Sprintf("%.2f ms", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f µs", v)
	default:
		return fmt.Sprintf("%.1f µs", v)
	}
}

// signed formats a difference in microseconds with its sign.
func signed(v float64) string {
	if v >= 0 {
		return "+" + usf(v)
	}
	return "−" + usf(-v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// q returns a quantile in microseconds.
func q(h *hist.Histogram, p float64) float64 { return float64(h.Quantile(p)) / 1e3 }

func find(ss []*side, key string) *side {
	for _, s := range ss {
		if s.t.key == key {
			return s
		}
	}
	return nil
}

type check struct {
	name, measured, limit string
	pass                  bool
	// undecided says why this run cannot judge the target; such a row
	// counts neither as passed nor as failed.
	undecided string
}

func (c check) verdict() string {
	switch {
	case c.undecided != "":
		return "no verdict: " + c.undecided
	case c.pass:
		return "PASS"
	}
	return "**FAIL**"
}

// ratioCheck judges "the gateway's added latency ≤ k × the bare hop's".
// A bare hop that measured no added latency (its percentile at or below
// the direct path's: noise on the shared machine larger than the hop)
// leaves no limit to judge by: the row has no verdict in that run.
func ratioCheck(name, measured string, k, gwAdded, bareAdded float64) check {
	if bareAdded <= 0 {
		return check{name: name, measured: measured, limit: "—",
			undecided: "the bare hop measured no added latency (direct as slow or slower: noise); rerun"}
	}
	return check{name: name, measured: measured, limit: "≤ " + signed(k*bareAdded), pass: gwAdded <= k*bareAdded}
}

func errCell(errs int64, first string) string {
	if errs == 0 {
		return "0"
	}
	if len(first) > 60 {
		first = first[:60] + "…"
	}
	return fmt.Sprintf("**%d** (%s)", errs, strings.ReplaceAll(first, "|", "/"))
}

// loadNote says how busy the machine was during a scenario's windows.
func loadNote(ss []*side) string {
	var bg, steal float64
	parts := make([]string, 0, len(ss))
	for _, x := range ss {
		bg, steal = max(bg, x.bg), max(steal, x.steal)
		parts = append(parts, fmt.Sprintf("%s %.2f", x.t.name, x.gen.Seconds()/x.res.Window.Seconds()))
	}
	n := fmt.Sprintf("Other processes used up to %.0f%% of the machine's CPU during these windows (hypervisor steal up to %.0f%%). Generator CPU, in cores: %s.",
		100*bg, 100*steal, strings.Join(parts, ", "))
	if bg > 0.10 || steal > 0.10 {
		n = "**Noisy:** " + n
	}
	return n
}

// render writes the results as markdown and returns the metrics compared
// between runs.
func render(h report.Header, b *bench, r *results) (string, report.Metrics) {
	m := b.m
	met := report.Metrics{}
	var checks []check
	var body strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&body, format, args...) }
	var maxBG, maxSteal float64
	for _, ss := range [][]*side{r.pass, r.tput, r.cache, r.stream, r.keys} {
		for _, x := range ss {
			maxBG, maxSteal = max(maxBG, x.bg), max(maxSteal, x.steal)
		}
	}

	// (a) pass-through
	if pp := find(r.pass, "pc"); pp != nil {
		pd, pb := find(r.pass, "direct"), find(r.pass, "bare")
		add := func(x *side, p float64) float64 { return q(x.res.Latency, p) - q(pd.res.Latency, p) }
		met["passthrough.added_p50_us"], met["passthrough.added_p99_us"] = add(pp, .5), add(pp, .99)
		met["passthrough.bare_added_p50_us"], met["passthrough.bare_added_p99_us"] = add(pb, .5), add(pb, .99)
		met["passthrough.cpu_us_per_req"], met["passthrough.bare_cpu_us_per_req"] = pp.cpuPerReq(), pb.cpuPerReq()
		met["passthrough.rss_mib"] = float64(pp.mem.RSS) / (1 << 20)
		checks = append(checks,
			ratioCheck("pass-through added latency p50 ≤ 1.5 × bare hop's", fmt.Sprintf("%s vs %s", signed(add(pp, .5)), signed(add(pb, .5))),
				1.5, add(pp, .5), add(pb, .5)),
			ratioCheck("pass-through added latency p99 ≤ 2 × bare hop's", fmt.Sprintf("%s vs %s", signed(add(pp, .99)), signed(add(pb, .99))),
				2, add(pp, .99), add(pb, .99)),
			check{fmt.Sprintf("gateway CPU per request ≤ 2 × bare hop's (at %.0f req/s)", m.ptRate),
				fmt.Sprintf("%s vs %s (%.2f×)", usf(pp.cpuPerReq()), usf(pb.cpuPerReq()), pp.cpuPerReq()/pb.cpuPerReq()),
				fmt.Sprintf("≤ %s", usf(2*pb.cpuPerReq())), pp.cpuPerReq() <= 2*pb.cpuPerReq(), ""},
		)
		w("## (a) Pass-through chat, open loop\n\n%.0f req/s, %d connections; OpenAI request in, `openai/` provider out to the fake upstream (JSON answer, no added latency). Each path is measured for %d rounds of %v (each after %v of warm-up), the paths taking turns. Latency is from the intended send time.\n\n",
			m.ptRate, m.ptConns, m.rounds, m.ptDur, m.warmup)
		w("| path | p50 | p90 | p99 | p99.9 | added p50 | added p99 | CPU/req (own process) | upstream CPU/req | RSS after | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.pass {
			if x.t.key == "pcfull" || x.t.key == "pcfullu" {
				continue
			}
			a50, a99 := "—", "—"
			if x != pd {
				a50, a99 = signed(add(x, .5)), signed(add(x, .99))
			}
			l := x.res.Latency
			w("| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s |\n", x.t.name, us(l.Quantile(.5)), us(l.Quantile(.9)), us(l.Quantile(.99)), us(l.Quantile(.999)),
				a50, a99, usf(x.cpuPerReq()), x.t.procLabel, usf(x.upCPUPerReq()), mib(x.mem.RSS), errCell(x.res.Errors, x.res.FirstErr))
		}
		w("\n%s\n\n%s\n\n", lagNote(r.pass), loadNote(r.pass))
	}

	// throughput
	if tp := find(r.tput, "pc"); tp != nil {
		tb := find(r.tput, "bare")
		met["throughput.rps"], met["throughput.bare_rps"], met["throughput.direct_rps"] = tp.res.Throughput(), tb.res.Throughput(), find(r.tput, "direct").res.Throughput()
		met["throughput.cpu_us_per_req"], met["throughput.bare_cpu_us_per_req"] = tp.cpuPerReq(), tb.cpuPerReq()
		checks = append(checks, check{fmt.Sprintf("max throughput (closed loop, %d connections) ≥ 0.6 × bare hop's", m.tpConns),
			fmt.Sprintf("%.0f vs %.0f req/s (%.2f×)", tp.res.Throughput(), tb.res.Throughput(), tp.res.Throughput()/tb.res.Throughput()),
			fmt.Sprintf("≥ %.0f req/s", 0.6*tb.res.Throughput()), tp.res.Throughput() >= 0.6*tb.res.Throughput(), ""})
		w("## Maximum throughput, closed loop\n\n%d connections, each sending its next request when the previous answer ends; %d rounds of %v (each after %v of warm-up) per path, the paths taking turns in an order that rotates each round. Latency here is service time (a closed loop has no schedule).\n\n", m.tpConns, m.rounds, m.tpDur, m.tpWarm)
		w("| path | req/s | vs bare hop | p50 | p99 | p99.9 | CPU/req (own process) | CPU used (cores) | upstream CPU/req | peak RSS | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.tput {
			if x.t.key == "pcfull" {
				continue
			}
			l := x.res.Latency
			w("| %s | %.0f | %.2f× | %s | %s | %s | %s (%s) | %.2f | %s | %s | %s |\n", x.t.name, x.res.Throughput(), x.res.Throughput()/tb.res.Throughput(),
				us(l.Quantile(.5)), us(l.Quantile(.99)), us(l.Quantile(.999)), usf(x.cpuPerReq()), x.t.procLabel,
				x.cpu.Seconds()/x.res.Window.Seconds(), usf(x.upCPUPerReq()), mib(x.mem.HWM), errCell(x.res.Errors, x.res.FirstErr))
		}
		w("\nAt max throughput the gateway's CPU per request is %.2f× the bare hop's (the CPU target is taken at the fixed rate of (a)).\n\n%s\n\n",
			tp.cpuPerReq()/tb.cpuPerReq(), loadNote(r.tput))
	}

	checks = append(checks, renderPipeline(&body, m, r, met)...)
	checks = append(checks, renderCache(&body, b, r, met)...)

	// (c) streaming
	if len(r.stream) > 0 {
		sd, sb, sp := find(r.stream, "direct"), find(r.stream, "bare"), find(r.stream, "pc")
		ttfbAdd := func(x *side, p float64) float64 { return q(x.res.TTFB, p) - q(sd.res.TTFB, p) }
		gapAdd := func(x *side, p float64) float64 { return q(x.res.Gap, p) - q(sd.res.Gap, p) }
		met["stream.ttfb_added_p50_us"], met["stream.ttfb_added_p99_us"] = ttfbAdd(sp, .5), ttfbAdd(sp, .99)
		met["stream.bare_ttfb_added_p50_us"], met["stream.bare_ttfb_added_p99_us"] = ttfbAdd(sb, .5), ttfbAdd(sb, .99)
		met["stream.gap_added_p50_us"], met["stream.gap_added_p99_us"] = gapAdd(sp, .5), gapAdd(sp, .99)
		met["stream.held_back"] = float64(sp.res.HeldBack)
		met["stream.cpu_us_per_stream"] = sp.cpuPerReq()
		checks = append(checks, check{"streaming TTFB added p50 ≤ bare hop's + 50 µs",
			fmt.Sprintf("%s vs %s", signed(ttfbAdd(sp, .5)), signed(ttfbAdd(sb, .5))),
			fmt.Sprintf("≤ %s", signed(ttfbAdd(sb, .5)+50)), ttfbAdd(sp, .5) <= ttfbAdd(sb, .5)+50, ""})
		// A chunk is held back when it reaches the client less than half
		// the upstream's gap after the previous one. A path that buffers
		// chunks shows that for nearly every gap; one that relays each
		// chunk at once shows only the scheduling hiccups of the shared
		// machine, which the bare hop measures in the same run. The
		// gateway is allowed the bare hop's share plus one percentage point.
		share := func(x *side) float64 { return float64(x.res.HeldBack) / float64(max(x.res.Gaps, 1)) }
		checks = append(checks, check{"streaming: no chunk held back",
			fmt.Sprintf("%d of %d gaps, %.2f%% (bare hop %.2f%%, direct %.2f%%)", sp.res.HeldBack, sp.res.Gaps, 100*share(sp), 100*share(sb), 100*share(sd)),
			fmt.Sprintf("≤ %.2f%%", 100*share(sb)+1), share(sp) <= share(sb)+0.01 && sp.res.Errors == 0, ""})
		w("## (c) Streaming, %d chunks %v apart\n\nOpen loop, %.0f streams/s, %d rounds of %v (each after %v of warm-up) per path, the paths taking turns in an order that rotates each round. TTFB is from the intended send time to the first SSE data event; inter-chunk is the time between consecutive data events at the client. A gap shorter than half the upstream's (%v) counts as a chunk held back.\n\n",
			m.chunks, m.gap, m.stRate, m.rounds, m.stDur, m.warmup, m.gap/2)
		w("| path | TTFB p50 | TTFB p99 | TTFB added p50 | TTFB added p99 | inter-chunk p50 | inter-chunk p99 | inter-chunk added p50 | inter-chunk added p99 | held back | CPU/stream | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.stream {
			t50, t99, g50, g99 := "—", "—", "—", "—"
			if x != sd {
				t50, t99, g50, g99 = signed(ttfbAdd(x, .5)), signed(ttfbAdd(x, .99)), signed(gapAdd(x, .5)), signed(gapAdd(x, .99))
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d / %d | %s | %s |\n", x.t.name, us(x.res.TTFB.Quantile(.5)), us(x.res.TTFB.Quantile(.99)), t50, t99,
				us(x.res.Gap.Quantile(.5)), us(x.res.Gap.Quantile(.99)), g50, g99, x.res.HeldBack, x.res.Gaps, usf(x.cpuPerReq()), errCell(x.res.Errors, x.res.FirstErr))
		}
		w("\n%s\n\n", byRound(sd, sb, sp))
		w("%s\n\n", loadNote(r.stream))
	}

	// (e) idle streams
	if len(r.idle) > 0 {
		var ip *idleSide
		for _, x := range r.idle {
			if x.t.key == "pc" {
				ip = x
			}
		}
		at10k := ip.projected(10000)
		met["idle.rss_mib"] = float64(at10k) / (1 << 20)
		measured := fmt.Sprintf("%s with %d streams established", mib(ip.with.RSS), ip.established)
		if ip.established != 10000 {
			measured += fmt.Sprintf("; %s at 10,000 by its per-stream growth", mib(at10k))
		}
		checks = append(checks, check{"gateway RSS with 10,000 idle streams < 300 MiB", measured, fmt.Sprintf("< 300 MiB, all %d established", ip.want),
			at10k < 300<<20 && ip.established == int64(ip.want), ""})
		w("## (e) Idle streams\n\n%d streams opened at %.0f/s from 127.0.0.1–127.0.0.8; each gets its first chunk, then the upstream sends nothing for 60 s. Memory is the hop's VmRSS before, %v after the last stream opened, and 2 s after the client closed them all.",
			ip.want, m.idleRamp, time.Second+m.idleHold)
		if ip.want < 10000 {
			w(" 10,000 streams need 20,000+ descriptors in the gateway; RLIMIT_NOFILE is %d here and its hard limit cannot be raised (no CAP_SYS_RESOURCE), so %d are held and the RSS at 10,000 is projected from the growth per established stream.", b.fdLimit, ip.want)
		}
		w("\n\n| path | established | time to open | RSS before | RSS with streams | per stream | projected at 10,000 | RSS after close | threads | CPU while idle |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.idle {
			per := "—"
			if x.established > 0 {
				per = fmt.Sprintf("%.1f KiB", float64(x.with.RSS-x.before.RSS)/1024/float64(x.established))
			}
			est := fmt.Sprintf("%d / %d", x.established, x.want)
			if x.failed > 0 {
				est += fmt.Sprintf(" (**%d failed**: %s)", x.failed, strings.ReplaceAll(x.firstErr, "|", "/"))
			}
			w("| %s | %s | %v | %s | %s | %s | %s | %s | %d | %.1f%% of a core |\n", x.t.name, est, x.elapsed.Round(10*time.Millisecond),
				mib(x.before.RSS), mib(x.with.RSS), per, mib(x.projected(10000)), mib(x.after.RSS), x.with.Threads, 100*x.idleCPU.Seconds()/x.hold.Seconds())
		}
		for _, x := range r.idle {
			if x.t.key == "pcmem" {
				met["idle.rss_reduce_memory_mib"] = float64(x.projected(10000)) / (1 << 20)
				w("\n`%s` is the same gateway with `portcullis.server.reduce_memory: true` (each connection's 8 KiB read buffer goes back to the pool once its request is read, at one more read syscall per request); the target is judged on the default `portcullis`. The fake upstream answers each hop's streams on its own loopback address (bare hop 127.0.0.1, then 127.0.0.2, 127.0.0.3), so one hop's closed connections, in TIME_WAIT for a minute, do not slow the next hop's connects.\n", x.t.name)
			}
		}
		if ip.rt != nil && ip.rt0 != nil && ip.established > 0 {
			d := func(k string) float64 { return (ip.rt[k] - ip.rt0[k]) / float64(ip.established) }
			w("\nThe gateway's Go runtime while holding them (its /metrics): %.0f goroutines (%.2f per stream); heap in use %s (%.1f KiB per stream, %.1f KiB of it live objects); goroutine stacks %s (%.1f KiB per stream).\n",
				ip.rt["go_goroutines"], d("go_goroutines"), mib(int64(ip.rt["go_memstats_heap_inuse_bytes"])), d("go_memstats_heap_inuse_bytes")/1024,
				d("go_memstats_heap_alloc_bytes")/1024, mib(int64(ip.rt["go_memstats_stack_inuse_bytes"])), d("go_memstats_stack_inuse_bytes")/1024)
		}
		w("\n")
	}

	checks = append(checks, renderKeys(&body, m, r, met)...)

	var s strings.Builder
	fmt.Fprintf(&s, "# Portcullis benchmark results\n\n")
	fmt.Fprintf(&s, "Written by `portcullis-bench run -mode %s` (`make bench%s`); rewritten by every run after comparing with the previous one. See [README.md](README.md) for the method and what each number means.\n\n",
		h.Mode, map[bool]string{true: "-full"}[h.Mode == "full"])
	fmt.Fprintf(&s, "- Machine: %s, %d cores (nproc), Linux %s\n", h.Machine, h.Cores, kernel())
	fmt.Fprintf(&s, "- Go: %s\n- Commit: %s\n- Date: %s\n", h.Go, h.Commit, h.Date)
	fmt.Fprintf(&s, "- One machine runs everything: the load generator, the fake upstream, the bare hop and the gateway share the same %d cores, so every number includes contention with the generator.\n", h.Cores)
	fmt.Fprintf(&s, "- Other processes used %.0f%% of the machine just before the run and up to %.0f%% during a measurement window; the hypervisor stole up to %.0f%% of it", 100*b.bgStart, 100*maxBG, 100*maxSteal)
	if b.gateWaited > 0 {
		fmt.Fprintf(&s, " (rounds were delayed %v in all, waiting for it to drop below 25%%)", b.gateWaited.Round(100*time.Millisecond))
	}
	if maxBG > 0.10 || b.bgStart > 0.10 || maxSteal > 0.10 {
		fmt.Fprintf(&s, ": **these numbers are noisy**; rerun on a quiet machine before acting on a small difference")
	}
	fmt.Fprintf(&s, ".\n")
	fmt.Fprintf(&s, "- The gateway runs with its default logging (level info: one JSON access line per request, to a file); a second gateway at `log.level: warn` is measured for pass-through and throughput to show what the access log costs. Targets use the default one.\n")
	fmt.Fprintf(&s, "- Added latency = the path's percentile minus the direct percentile, same scenario, same run. Open-loop latencies are measured from each request's intended send time (coordinated-omission corrected).\n\n")
	fmt.Fprintf(&s, "## Targets\n\n| target | measured | limit | result |\n|---|---|---|---|\n")
	pass, undecided := 0, 0
	for _, c := range checks {
		fmt.Fprintf(&s, "| %s | %s | %s | %s |\n", c.name, c.measured, c.limit, c.verdict())
		switch {
		case c.undecided != "":
			undecided++
		case c.pass:
			pass++
		}
	}
	fmt.Fprintf(&s, "\n%d of %d targets pass", pass, len(checks))
	if undecided > 0 {
		fmt.Fprintf(&s, "; %d without a verdict in this run", undecided)
	}
	s.WriteString(".\n\n")
	s.WriteString(body.String())
	return s.String(), met
}

// lagNote gives the generator's send lag and the service time of each path
// of an open-loop scenario.
func lagNote(ss []*side) string {
	var b strings.Builder
	b.WriteString("Generator send lag (actual minus intended send time; part of every latency above): ")
	for i, x := range ss {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s p50 %s p99 %s", x.t.name, us(x.res.SendLag.Quantile(.5)), us(x.res.SendLag.Quantile(.99)))
	}
	b.WriteString(". Service time (from the actual send) p50 / p99: ")
	for i, x := range ss {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s %s / %s", x.t.name, us(x.res.Service.Quantile(.5)), us(x.res.Service.Quantile(.99)))
	}
	b.WriteString(".")
	return b.String()
}

// pick returns the sides of ss with the given keys, in that order,
// skipping those not measured.
func pick(ss []*side, keys ...string) []*side {
	var out []*side
	for _, k := range keys {
		if x := find(ss, k); x != nil {
			out = append(out, x)
		}
	}
	return out
}

// renderPipeline writes (b): the gateway with a master key and a virtual
// key, measured in (a)'s rounds and in the throughput rounds.
func renderPipeline(body *strings.Builder, m mode, r *results, met report.Metrics) []check {
	pf := find(r.pass, "pcfull")
	tf := find(r.tput, "pcfull")
	if pf == nil && tf == nil {
		return nil
	}
	w := func(format string, args ...any) { fmt.Fprintf(body, format, args...) }
	var checks []check
	w("## (b) Full pipeline\n\n")
	w("A gateway with `general_settings.master_key`, the shipped Rego policies (`portcullis.policy.dir`) and one Wasm plugin (`portcullis.plugins`). Before measuring, the driver creates team `%s` (`POST /team/new`) and one virtual key in it (`POST /key/generate`: `max_budget` 1,000,000 USD, `rpm_limit` 10^8, `tpm_limit` 10^9: every check runs, none refuses); every request carries the key. Every request goes through:\n\n", pipelineTeam)
	w("- virtual-key authentication (the ristretto key cache), budget reserve and settle, rpm/tpm limits;\n")
	w("- the Rego decision of `policies/gateway/*.rego` (copied with their `*_test.rego`, which the gateway runs when it loads them) with a `data.json` of: team access for the key's team (models `gpt-4o*`, `bench*`; providers `openai`) among %s teams, %d content rules (secrets, prompt injection, personal data, topics: none matches the prompt) and PII actions (email redact, phone flag, card and secrets deny). The request is allowed. Each request's user message carries its own number, so the content rules and PII patterns scan a text they have not seen (the policy engine caches match results per text: the system message, the same in every request, hits that cache, as earlier messages of a conversation do);\n", thousands(otherTeams+1), len(contentRules))
	w("- the `pii-redact` plugin (C, Wasm) on `on_request` with `trusted: true` (a first-party plugin, run without the per-loop deadline checks; `fail_closed`): it scans every message and, for this prompt, changes nothing;\n")
	w("- the spend record, written by the batched SQLite writer. Audit records are written for admin calls only (here the team and the key), none per request.\n\n")
	w("Measured in the same rounds as (a) and as the throughput run, the paths taking turns; `portcullis` is (a)'s gateway (no master key, no policies, no plugin: none of these stages but the spend record). `portcullis full pipeline (plugin untrusted)`, when measured, is the same gateway with the plugin's default `trusted: false` (wazero checks the deadline at every loop iteration), at the fixed rate only.\n\n")
	if pf != nil {
		pd, pb := find(r.pass, "direct"), find(r.pass, "bare")
		add := func(x *side, p float64) float64 { return q(x.res.Latency, p) - q(pd.res.Latency, p) }
		met["fullpipeline.added_p50_us"], met["fullpipeline.added_p99_us"] = add(pf, .5), add(pf, .99)
		met["fullpipeline.cpu_us_per_req"] = pf.cpuPerReq()
		if pu := find(r.pass, "pcfullu"); pu != nil {
			met["fullpipeline.untrusted_added_p50_us"], met["fullpipeline.untrusted_cpu_us_per_req"] = add(pu, .5), pu.cpuPerReq()
		}
		checks = append(checks, ratioCheck(fmt.Sprintf("full pipeline added latency p50 ≤ 3 × bare hop's (at %.0f req/s)", m.ptRate),
			fmt.Sprintf("%s vs %s (%.2f×)", signed(add(pf, .5)), signed(add(pb, .5)), add(pf, .5)/add(pb, .5)),
			3, add(pf, .5), add(pb, .5)))
		w("### At %.0f req/s, open loop\n\n%d connections, %d rounds of %v (each after %v of warm-up) per path. Latency is from the intended send time.\n\n", m.ptRate, m.ptConns, m.rounds, m.ptDur, m.warmup)
		w("| path | p50 | p99 | p99.9 | added p50 | added p99 | added p50 vs bare hop | CPU/req (own process) | vs bare hop | RSS after | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range pick(r.pass, "direct", "bare", "pc", "pcfull", "pcfullu") {
			a50, a99, ra, rc := "—", "—", "—", "—"
			if x != pd {
				a50, a99 = signed(add(x, .5)), signed(add(x, .99))
				ra = fmt.Sprintf("%.2f×", add(x, .5)/add(pb, .5))
				rc = fmt.Sprintf("%.2f×", x.cpuPerReq()/pb.cpuPerReq())
			}
			l := x.res.Latency
			w("| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s |\n", x.t.name, us(l.Quantile(.5)), us(l.Quantile(.99)), us(l.Quantile(.999)),
				a50, a99, ra, usf(x.cpuPerReq()), x.t.procLabel, rc, mib(x.mem.RSS), errCell(x.res.Errors, x.res.FirstErr))
		}
		w("\n%s\n\n%s\n\n", lagNote(pick(r.pass, "direct", "bare", "pcfull", "pcfullu")), loadNote(pick(r.pass, "direct", "bare", "pcfull", "pcfullu")))
		for _, x := range pick(r.pass, "pcfull", "pcfullu") {
			if n := stageNote(x.t.name, r.scraped[x.t.key]); n != "" {
				w("%s\n\n", n)
			}
		}
	}
	if tf != nil {
		tb := find(r.tput, "bare")
		met["fullpipeline.rps"], met["fullpipeline.tput_cpu_us_per_req"] = tf.res.Throughput(), tf.cpuPerReq()
		checks = append(checks, check{fmt.Sprintf("full pipeline max throughput (closed loop, %d connections) ≥ 0.3 × bare hop's", m.tpConns),
			fmt.Sprintf("%.0f vs %.0f req/s (%.2f×)", tf.res.Throughput(), tb.res.Throughput(), tf.res.Throughput()/tb.res.Throughput()),
			fmt.Sprintf("≥ %.0f req/s", 0.3*tb.res.Throughput()), tf.res.Throughput() >= 0.3*tb.res.Throughput(), ""})
		w("### Maximum throughput, closed loop\n\n%d connections, %d rounds of %v (each after %v of warm-up) per path; latency is service time.\n\n", m.tpConns, m.rounds, m.tpDur, m.tpWarm)
		w("| path | req/s | vs bare hop | p50 | p99 | CPU/req (own process) | CPU used (cores) | peak RSS | errors |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range pick(r.tput, "direct", "bare", "pc", "pcfull") {
			l := x.res.Latency
			w("| %s | %.0f | %.2f× | %s | %s | %s (%s) | %.2f | %s | %s |\n", x.t.name, x.res.Throughput(), x.res.Throughput()/tb.res.Throughput(),
				us(l.Quantile(.5)), us(l.Quantile(.99)), usf(x.cpuPerReq()), x.t.procLabel,
				x.cpu.Seconds()/x.res.Window.Seconds(), mib(x.mem.HWM), errCell(x.res.Errors, x.res.FirstErr))
		}
		w("\n%s\n\n", loadNote(pick(r.tput, "direct", "bare", "pcfull")))
	}
	return checks
}

// renderKeys writes (f): lookup cost and memory against the number of
// keys in the database.
func renderKeys(body *strings.Builder, m mode, r *results, met report.Metrics) []check {
	if len(r.keys) < 2 {
		return nil
	}
	w := func(format string, args ...any) { fmt.Fprintf(body, format, args...) }
	kd := find(r.keys, "direct")
	var ks []*side
	for _, x := range r.keys {
		if x.t.ks != nil {
			ks = append(ks, x)
		}
	}
	if kd == nil || len(ks) == 0 {
		return nil
	}
	add := func(x *side, p float64) float64 { return q(x.res.Latency, p) - q(kd.res.Latency, p) }
	classQ := func(x *side, c int, p float64) string {
		h := x.res.ByClass[c]
		if h == nil || h.Count() < 20 {
			return "—"
		}
		return us(h.Quantile(p))
	}
	for _, x := range ks {
		n := x.t.ks.n
		met[fmt.Sprintf("keys.%d.added_p50_us", n)] = add(x, .5)
		met[fmt.Sprintf("keys.%d.cpu_us_per_req", n)] = x.cpuPerReq()
		met[fmt.Sprintf("keys.%d.rss_mib", n)] = float64(x.mem.RSS) / (1 << 20)
	}
	w("## (f) Virtual keys in the database: lookup cost and memory\n\n")
	w("One gateway per size N of the key table, each with `general_settings.master_key` and `portcullis.auth.key_cache_size: N`, on a SQLite file seeded before it starts with N keys `sk-bench-000000000`… by `portcullis-bench seed-keys` (the store writes the first key; its row is copied for the others in large transactions). Each request carries a key picked uniformly at random among the N; %.0f req/s, %d connections, %d rounds of %v (each after %v of warm-up) per path, the gateways taking turns with direct (the reference for *added*).\n\n",
		m.kfRate, m.ptConns, m.rounds, m.ptDur, m.warmup)
	w("*First touch* is a request whose key the generator had not sent to that gateway before: the gateway cannot have it cached, so it reads it from SQLite (a cache miss). A *repeat* should be a hit (the cache holds N keys; ristretto may still drop an insert under contention). The gateway exports no cache counters, so this split is the generator's. Nothing warms the cache first: touching every key once takes N requests (1,000,000 at 1,000 req/s is 17 minutes), so at large N nearly every request is a first touch and the row measures the miss path; at 1,000 keys the cache is warm after the first round, and its first touches, nearly all in that round just after the gateway started, also carry the process's own warm-up.\n\n")
	w("| keys (cache size) | seeded in | DB file | p50 | p99 | added p50 | added p99 | CPU/req (gateway) | first touch (misses) | p50 first touch / repeat | written to disk/req | distinct keys loaded | Go heap in use before → after | RSS before → after | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	l := kd.res.Latency
	w("| direct | — | — | %s | %s | — | — | — | — | — | — | — | — | — | %s |\n", us(l.Quantile(.5)), us(l.Quantile(.99)), errCell(kd.res.Errors, kd.res.FirstErr))
	small, large := ks[0], ks[len(ks)-1]
	heap := func(rt map[string]float64) string {
		if v, ok := rt["go_memstats_heap_inuse_bytes"]; ok {
			return mib(int64(v))
		}
		return "?"
	}
	for _, x := range ks {
		k := x.t.ks
		l := x.res.Latency
		w("| %s | %v | %s | %s | %s | %s | %s | %s | %.1f%% | %s / %s | %.1f KiB | %s | %s → %s | %s → %s | %s |\n", thousands(k.n), k.seedTime.Round(10*time.Millisecond), size(k.dbBytes),
			us(l.Quantile(.5)), us(l.Quantile(.99)), signed(add(x, .5)), signed(add(x, .99)), usf(x.cpuPerReq()), 100*firstShare(x.res),
			classQ(x, classFirst, .5), classQ(x, classRepeat, .5), float64(x.written)/1024/float64(max(x.n(), 1)), thousands(k.distinct()), heap(k.rtBefore), heap(k.rtAfter), mib(k.memBefore.RSS), mib(x.mem.RSS), errCell(x.res.Errors, x.res.FirstErr))
	}
	w("\n*Written to disk/req*: what the gateway process wrote to its files during the windows (`/proc/<pid>/io` write_bytes: access log, SQLite WAL and checkpoints) per request. ")
	w("*Before*: the gateway after start and one probe request; *after*: at the end of its last round. The Go heap in use before (from its `/metrics`) is mostly what the key cache sized for N allocates at start (ristretto's admission counters, 10 per key). Go's GC lets the heap grow to twice what was live after the last collection, so that allocation also raises the point up to which garbage accumulates (GC target at start:")
	for i, x := range ks {
		sep := ","
		if i == 0 {
			sep = ""
		}
		v, ok := x.t.ks.rtBefore["go_memstats_next_gc_bytes"]
		if ok {
			w("%s %s at %s keys", sep, mib(int64(v)), thousands(x.t.ks.n))
		}
	}
	w("): the RSS after grows with that garbage, the keys loaded and SQLite's page cache (at most 2 MiB per connection). What all N keys cached would take is not measured: it needs N requests first.\n\n%s\n\n", loadNote(r.keys))
	if small == large {
		return nil
	}
	label := thousands(large.t.ks.n) + " keys"
	if large.t.ks.n < 1000000 {
		label += " (1,000,000 in `-mode full`)"
	}
	base := thousands(small.t.ks.n) + " keys"
	note := fmt.Sprintf("; first touch %.0f%% vs %.0f%%", 100*firstShare(large.res), 100*firstShare(small.res))
	return []check{
		{fmt.Sprintf("%s: CPU per request ≤ 1.5 × at %s", label, base),
			fmt.Sprintf("%s vs %s (%.2f×%s)", usf(large.cpuPerReq()), usf(small.cpuPerReq()), large.cpuPerReq()/small.cpuPerReq(), note),
			fmt.Sprintf("≤ %s", usf(1.5*small.cpuPerReq())), large.cpuPerReq() <= 1.5*small.cpuPerReq(), ""},
		{fmt.Sprintf("%s: added latency p50 ≤ 1.5 × at %s", label, base),
			fmt.Sprintf("%s vs %s (%.2f×; p50 %s vs %s)", signed(add(large, .5)), signed(add(small, .5)), add(large, .5)/add(small, .5), us(large.res.Latency.Quantile(.5)), us(small.res.Latency.Quantile(.5))),
			fmt.Sprintf("≤ %s", signed(1.5*add(small, .5))), add(large, .5) <= 1.5*add(small, .5), ""},
	}
}

// size formats a byte count.
func size(b int64) string {
	if b < 1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(b)/1024)
	}
	return mib(b)
}

// renderCache writes (d): the same deterministic request answered from the
// gateway's response cache, against direct, the bare hop and the
// pass-through gateway (which call the upstream for it).
func renderCache(body *strings.Builder, b *bench, r *results, met report.Metrics) []check {
	cc := find(r.cache, "pccache")
	cd := find(r.cache, "direct")
	if cc == nil || cd == nil {
		return nil
	}
	m := b.m
	w := func(format string, args ...any) { fmt.Fprintf(body, format, args...) }
	add := func(x *side, p float64) float64 { return q(x.res.Latency, p) - q(cd.res.Latency, p) }
	met["cache.added_p50_us"], met["cache.added_p99_us"] = add(cc, .5), add(cc, .99)
	met["cache.cpu_us_per_req"] = cc.cpuPerReq()
	hits := cacheHits(cc, r.cacheCalls["pccache"])
	checks := []check{{"(d) cache hit: every measured request answered from the cache (validity of (d))",
		fmt.Sprintf("%d of %d with `x-cache: HIT`; the upstream served %d requests during its rounds", cc.res.Matched, cc.res.OK, r.cacheCalls["pccache"]),
		"all, 0 upstream requests, no error", hits, ""}}
	w("## (d) Cache hit\n\n")
	w("`portcullis cache hit` is (a)'s gateway (no master key) with `litellm_settings: {cache: true}` (the in-memory response cache, default settings: only deterministic requests are cached). Every request of the scenario is the same chat request with `\"temperature\": 0` to a deployment whose upstream answers %s of JSON (the fake upstream's `/large/` answer; direct gets the same answer from it, and `portcullis` is (a)'s gateway, which has no cache and calls the upstream for every request; the bare hop is not measured here, to keep `make bench` under 3 minutes: (a) relates the gateway to it). Before measuring, the driver sent it twice to the cache gateway: the first got `x-cache: MISS` and was stored, the second `x-cache: HIT` with the same %d-byte body and no upstream request. Every measured response of the cache gateway is checked for `x-cache: HIT`, and the fake upstream counts the requests it serves during each path's rounds: a hit never reaches it, so *added* latency can be negative.\n\n",
		size(int64(len(upstream.LargeCompletionBody))), b.cacheBytes)
	w("%.0f req/s, %d connections, %d rounds of %v (each after %v of warm-up) per path, the paths taking turns in an order that rotates each round. Latency is from the intended send time.\n\n", m.ptRate, m.ptConns, m.rounds, m.ptDur, m.warmup)
	if !hits {
		w("**The cache did not answer every request: this table does not measure cache hits** (see the targets).\n\n")
	}
	w("| path | p50 | p90 | p99 | p99.9 | added p50 | added p99 | CPU/req (own process) | upstream CPU/req | upstream requests | `x-cache: HIT` | RSS after | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.cache {
		a50, a99 := "—", "—"
		if x != cd {
			a50, a99 = signed(add(x, .5)), signed(add(x, .99))
		}
		l := x.res.Latency
		w("| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %d | %d / %d | %s | %s |\n", x.t.name, us(l.Quantile(.5)), us(l.Quantile(.9)), us(l.Quantile(.99)), us(l.Quantile(.999)),
			a50, a99, usf(x.cpuPerReq()), x.t.procLabel, usf(x.upCPUPerReq()), r.cacheCalls[x.t.key], x.res.Matched, x.res.OK, mib(x.mem.RSS), errCell(x.res.Errors, x.res.FirstErr))
	}
	if sm := r.scraped["pccache"]; sm != nil {
		w("\nThe cache gateway's `/metrics` after the run (probes and warm-ups included): %.0f hits, %.0f misses, %.0f stores.\n",
			sumMetric(sm, "portcullis_cache_hits_total"), sumMetric(sm, "portcullis_cache_misses_total"), sumMetric(sm, "portcullis_cache_stores_total"))
	}
	if cp := find(r.cache, "pc"); cp != nil {
		w("\nAgainst the pass-through gateway calling the upstream for the same request: p50 %s vs %s, p99 %s vs %s, gateway CPU per request %s vs %s (%.2f×). *Upstream requests* counts the warm-up too.\n",
			us(cc.res.Latency.Quantile(.5)), us(cp.res.Latency.Quantile(.5)), us(cc.res.Latency.Quantile(.99)), us(cp.res.Latency.Quantile(.99)),
			usf(cc.cpuPerReq()), usf(cp.cpuPerReq()), cc.cpuPerReq()/cp.cpuPerReq())
	}
	w("\n%s\n\n%s\n\n", lagNote(r.cache), loadNote(r.cache))
	return checks
}

// byRound describes (c)'s TTFB p50 round by round: the paths take turns,
// so a round of the gateway and the bare hop's round just before it ran
// under nearly the same conditions of the shared machine, and their
// difference shows how much of the pooled difference is drift.
func byRound(sd, sb, sp *side) string {
	n := min(len(sd.ttfbRounds), len(sb.ttfbRounds), len(sp.ttfbRounds))
	if n == 0 {
		return ""
	}
	f := func(v []float64) string {
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = fmt.Sprintf("%.0f", x)
		}
		return strings.Join(parts, ", ")
	}
	diff := make([]float64, n)
	for i := range diff {
		diff[i] = sp.ttfbRounds[i] - sb.ttfbRounds[i]
	}
	return fmt.Sprintf("TTFB p50 by round (µs): direct %s; bare hop %s; portcullis %s; portcullis minus the bare hop, round by round: %s.",
		f(sd.ttfbRounds[:n]), f(sb.ttfbRounds[:n]), f(sp.ttfbRounds[:n]), f(diff))
}
