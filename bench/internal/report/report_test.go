package report

import (
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	prev := Metrics{
		"passthrough.added_p50_us":   40,
		"passthrough.added_p99_us":   100,
		"throughput.rps":             10000,
		"passthrough.cpu_us_per_req": 50,
		"stream.ttfb_added_p50_us":   2, // tiny: the floor applies
		"idle.rss_mib":               200,
	}
	cur := Metrics{
		"passthrough.added_p50_us":   44.5, // +11.25%: flagged
		"passthrough.added_p99_us":   109,  // +9%: not flagged
		"throughput.rps":             8900, // -11%: flagged (higher is better)
		"passthrough.cpu_us_per_req": 40,   // better
		"stream.ttfb_added_p50_us":   2.4,  // +20% of 2, but only 8% of the 5 µs floor
		"throughput.cpu_us_per_req":  30,   // new key: not compared
	}
	regs, compared := Compare(prev, cur)
	if len(compared) != 5 {
		t.Fatalf("compared %v", compared)
	}
	got := map[string]bool{}
	for _, r := range regs {
		got[r.Rule.Key] = true
		if !strings.HasPrefix(r.String(), "REGRESSION ") {
			t.Fatal(r.String())
		}
	}
	if len(regs) != 2 || !got["passthrough.added_p50_us"] || !got["throughput.rps"] {
		t.Fatalf("regressions %v", regs)
	}
}

func TestNegativeAddedLatency(t *testing.T) {
	// An added latency can be negative (noise); worse means larger.
	regs, _ := Compare(Metrics{"passthrough.added_p50_us": -10}, Metrics{"passthrough.added_p50_us": -8.5})
	if len(regs) != 1 || regs[0].Change < 0.14 || regs[0].Change > 0.16 {
		t.Fatalf("%v", regs)
	}
	regs, _ = Compare(Metrics{"passthrough.added_p50_us": -10}, Metrics{"passthrough.added_p50_us": -12})
	if len(regs) != 0 {
		t.Fatalf("%v", regs)
	}
}

func TestMetricsRoundTrip(t *testing.T) {
	h := Header{Mode: "short", Machine: "AMD EPYC", Cores: 2, Go: "go1.26", Commit: "abc1234", Date: "2026-01-01"}
	m := Metrics{"throughput.rps": 12345.5, "idle.rss_mib": 180}
	md := "# Results\n\n| a | b |\n\n" + MetricsLine(h, m) + "\n"
	h2, m2, err := ParseResults(md)
	if err != nil || h2 != h || len(m2) != 2 || m2["throughput.rps"] != 12345.5 {
		t.Fatalf("%+v %v %v", h2, m2, err)
	}
	if _, _, err := ParseResults("# nothing here\n"); err == nil {
		t.Fatal("want an error without the line")
	}
	if k := Keys(m); len(k) != 2 || k[0] != "idle.rss_mib" {
		t.Fatal(k)
	}
}
