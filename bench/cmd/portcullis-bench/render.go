package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/portcullis/portcullis/bench/internal/hist"
	"github.com/portcullis/portcullis/bench/internal/report"
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
}

func verdict(p bool) string {
	if p {
		return "PASS"
	}
	return "**FAIL**"
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
	for _, ss := range [][]*side{r.pass, r.tput, r.stream} {
		for _, x := range ss {
			maxBG, maxSteal = max(maxBG, x.bg), max(maxSteal, x.steal)
		}
	}

	// (a) pass-through
	if len(r.pass) > 0 {
		pd, pb, pp := find(r.pass, "direct"), find(r.pass, "bare"), find(r.pass, "pc")
		add := func(x *side, p float64) float64 { return q(x.res.Latency, p) - q(pd.res.Latency, p) }
		met["passthrough.added_p50_us"], met["passthrough.added_p99_us"] = add(pp, .5), add(pp, .99)
		met["passthrough.bare_added_p50_us"], met["passthrough.bare_added_p99_us"] = add(pb, .5), add(pb, .99)
		met["passthrough.cpu_us_per_req"], met["passthrough.bare_cpu_us_per_req"] = pp.cpuPerReq(), pb.cpuPerReq()
		met["passthrough.rss_mib"] = float64(pp.mem.RSS) / (1 << 20)
		checks = append(checks,
			check{"pass-through added latency p50 ≤ 1.5 × bare hop's", fmt.Sprintf("%s vs %s", signed(add(pp, .5)), signed(add(pb, .5))),
				fmt.Sprintf("≤ %s", signed(1.5*add(pb, .5))), add(pp, .5) <= 1.5*add(pb, .5)},
			check{"pass-through added latency p99 ≤ 2 × bare hop's", fmt.Sprintf("%s vs %s", signed(add(pp, .99)), signed(add(pb, .99))),
				fmt.Sprintf("≤ %s", signed(2*add(pb, .99))), add(pp, .99) <= 2*add(pb, .99)},
			check{fmt.Sprintf("gateway CPU per request ≤ 2 × bare hop's (at %.0f req/s)", m.ptRate),
				fmt.Sprintf("%s vs %s (%.2f×)", usf(pp.cpuPerReq()), usf(pb.cpuPerReq()), pp.cpuPerReq()/pb.cpuPerReq()),
				fmt.Sprintf("≤ %s", usf(2*pb.cpuPerReq())), pp.cpuPerReq() <= 2*pb.cpuPerReq()},
		)
		w("## (a) Pass-through chat, open loop\n\n%.0f req/s, %d connections; OpenAI request in, `openai/` provider out to the fake upstream (JSON answer, no added latency). Each path is measured for %d rounds of %v (each after %v of warm-up), the paths taking turns. Latency is from the intended send time.\n\n",
			m.ptRate, m.ptConns, m.rounds, m.ptDur, m.warmup)
		w("| path | p50 | p90 | p99 | p99.9 | added p50 | added p99 | CPU/req (own process) | upstream CPU/req | RSS after | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.pass {
			a50, a99 := "—", "—"
			if x != pd {
				a50, a99 = signed(add(x, .5)), signed(add(x, .99))
			}
			l := x.res.Latency
			w("| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s |\n", x.t.name, us(l.Quantile(.5)), us(l.Quantile(.9)), us(l.Quantile(.99)), us(l.Quantile(.999)),
				a50, a99, usf(x.cpuPerReq()), x.t.procLabel, usf(x.upCPUPerReq()), mib(x.mem.RSS), errCell(x.res.Errors, x.res.FirstErr))
		}
		w("\nGenerator send lag (actual minus intended send time; part of every latency above): ")
		for i, x := range r.pass {
			if i > 0 {
				w("; ")
			}
			w("%s p50 %s p99 %s", x.t.name, us(x.res.SendLag.Quantile(.5)), us(x.res.SendLag.Quantile(.99)))
		}
		w(". Service time (from the actual send) p50 / p99: ")
		for i, x := range r.pass {
			if i > 0 {
				w("; ")
			}
			w("%s %s / %s", x.t.name, us(x.res.Service.Quantile(.5)), us(x.res.Service.Quantile(.99)))
		}
		w(".\n\n%s\n\n", loadNote(r.pass))
	}

	// throughput
	if len(r.tput) > 0 {
		tb, tp := find(r.tput, "bare"), find(r.tput, "pc")
		met["throughput.rps"], met["throughput.bare_rps"], met["throughput.direct_rps"] = tp.res.Throughput(), tb.res.Throughput(), find(r.tput, "direct").res.Throughput()
		met["throughput.cpu_us_per_req"], met["throughput.bare_cpu_us_per_req"] = tp.cpuPerReq(), tb.cpuPerReq()
		checks = append(checks, check{fmt.Sprintf("max throughput (closed loop, %d connections) ≥ 0.6 × bare hop's", m.tpConns),
			fmt.Sprintf("%.0f vs %.0f req/s (%.2f×)", tp.res.Throughput(), tb.res.Throughput(), tp.res.Throughput()/tb.res.Throughput()),
			fmt.Sprintf("≥ %.0f req/s", 0.6*tb.res.Throughput()), tp.res.Throughput() >= 0.6*tb.res.Throughput()})
		w("## Maximum throughput, closed loop\n\n%d connections, each sending its next request when the previous answer ends; %d rounds of %v (each after %v of warm-up) per path, the paths taking turns. Latency here is service time (a closed loop has no schedule).\n\n", m.tpConns, m.rounds, m.tpDur, m.tpWarm)
		w("| path | req/s | vs bare hop | p50 | p99 | p99.9 | CPU/req (own process) | CPU used (cores) | upstream CPU/req | peak RSS | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.tput {
			l := x.res.Latency
			w("| %s | %.0f | %.2f× | %s | %s | %s | %s (%s) | %.2f | %s | %s | %s |\n", x.t.name, x.res.Throughput(), x.res.Throughput()/tb.res.Throughput(),
				us(l.Quantile(.5)), us(l.Quantile(.99)), us(l.Quantile(.999)), usf(x.cpuPerReq()), x.t.procLabel,
				x.cpu.Seconds()/x.res.Window.Seconds(), usf(x.upCPUPerReq()), mib(x.mem.HWM), errCell(x.res.Errors, x.res.FirstErr))
		}
		w("\nAt max throughput the gateway's CPU per request is %.2f× the bare hop's (the CPU target is taken at the fixed rate of (a)).\n\n%s\n\n",
			tp.cpuPerReq()/tb.cpuPerReq(), loadNote(r.tput))
	}

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
			fmt.Sprintf("≤ %s", signed(ttfbAdd(sb, .5)+50)), ttfbAdd(sp, .5) <= ttfbAdd(sb, .5)+50})
		// A chunk is held back when it reaches the client less than half
		// the upstream's gap after the previous one. A path that buffers
		// chunks shows that for nearly every gap; one that relays each
		// chunk at once shows only the scheduling hiccups of the shared
		// machine, which the bare hop measures in the same run. The
		// gateway is allowed the bare hop's share plus one percentage point.
		share := func(x *side) float64 { return float64(x.res.HeldBack) / float64(max(x.res.Gaps, 1)) }
		checks = append(checks, check{"streaming: no chunk held back",
			fmt.Sprintf("%d of %d gaps, %.2f%% (bare hop %.2f%%, direct %.2f%%)", sp.res.HeldBack, sp.res.Gaps, 100*share(sp), 100*share(sb), 100*share(sd)),
			fmt.Sprintf("≤ %.2f%%", 100*share(sb)+1), share(sp) <= share(sb)+0.01 && sp.res.Errors == 0})
		w("## (c) Streaming, %d chunks %v apart\n\nOpen loop, %.0f streams/s, %d rounds of %v (each after %v of warm-up) per path, the paths taking turns. TTFB is from the intended send time to the first SSE data event; inter-chunk is the time between consecutive data events at the client. A gap shorter than half the upstream's (%v) counts as a chunk held back.\n\n",
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
		w("\n%s\n\n", loadNote(r.stream))
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
			at10k < 300<<20 && ip.established == int64(ip.want)})
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
		if ip.rt != nil && ip.rt0 != nil && ip.established > 0 {
			d := func(k string) float64 { return (ip.rt[k] - ip.rt0[k]) / float64(ip.established) }
			w("\nThe gateway's Go runtime while holding them (its /metrics): %.0f goroutines (%.2f per stream); heap in use %s (%.1f KiB per stream, %.1f KiB of it live objects); goroutine stacks %s (%.1f KiB per stream).\n",
				ip.rt["go_goroutines"], d("go_goroutines"), mib(int64(ip.rt["go_memstats_heap_inuse_bytes"])), d("go_memstats_heap_inuse_bytes")/1024,
				d("go_memstats_heap_alloc_bytes")/1024, mib(int64(ip.rt["go_memstats_stack_inuse_bytes"])), d("go_memstats_stack_inuse_bytes")/1024)
		}
		w("\n")
	}

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
	pass := 0
	for _, c := range checks {
		fmt.Fprintf(&s, "| %s | %s | %s | %s |\n", c.name, c.measured, c.limit, verdict(c.pass))
		if c.pass {
			pass++
		}
	}
	fmt.Fprintf(&s, "\n%d of %d targets pass.\n\n", pass, len(checks))
	s.WriteString(body.String())
	return s.String(), met
}
