package route

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/pricing"
	"github.com/portcullis/portcullis/engine/provider"
)

type nopProvider struct{}

func (nopProvider) Chat(context.Context, *provider.Request) (*provider.Response, error) {
	return &provider.Response{Status: 200}, nil
}

func group(t testing.TB, strategy string, deps ...*Deployment) (*Router, *Group) {
	for i, d := range deps {
		if d.ID == "" {
			d.ID = "d" + string(rune('0'+i))
		}
		d.ModelName = "g"
		d.Provider = nopProvider{}
	}
	r := New(deps, Settings{Strategy: strategy}, nil, nil)
	g, _ := r.Group("g")
	return r, g
}

func counts(r *Router, g *Group, n int, stream bool) map[string]int {
	out := map[string]int{}
	for i := 0; i < n; i++ {
		f := filter{now: time.Now().UnixNano()}
		if d := r.pick(g, &f, stream); d != nil {
			out[d.ID]++
		} else {
			out["<nil>"]++
		}
	}
	return out
}

// within checks a count against its expectation with a 5-sigma binomial
// bound, so the test fails only for a real bias.
func within(t *testing.T, name string, got, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	if math.Abs(float64(got)-mean) > 5*sigma+1 {
		t.Errorf("%s: %d of %d, expected %.0f ± %.0f", name, got, n, mean, 5*sigma)
	}
}

func TestShuffleRespectsWeights(t *testing.T) {
	r, g := group(t, "simple-shuffle", &Deployment{Weight: 1}, &Deployment{Weight: 3}, &Deployment{Weight: 6})
	c := counts(r, g, 20000, false)
	within(t, "w1", c["d0"], 20000, 0.1)
	within(t, "w3", c["d1"], 20000, 0.3)
	within(t, "w6", c["d2"], 20000, 0.6)
	// By rpm when no weight is set.
	r, g = group(t, "simple-shuffle", &Deployment{RPM: 100}, &Deployment{RPM: 300})
	c = counts(r, g, 20000, false)
	within(t, "rpm100", c["d0"], 20000, 0.25)
	// Equal when nothing is set.
	r, g = group(t, "", &Deployment{}, &Deployment{})
	c = counts(r, g, 20000, false)
	within(t, "equal", c["d0"], 20000, 0.5)
}

func TestLeastBusyUnderSkewedLoad(t *testing.T) {
	r, g := group(t, "least-busy", &Deployment{}, &Deployment{}, &Deployment{})
	g.Deployments[0].health.inflight.Store(5)
	g.Deployments[1].health.inflight.Store(1)
	g.Deployments[2].health.inflight.Store(3)
	if c := counts(r, g, 100, false); c["d1"] != 100 {
		t.Fatalf("least-busy chose %v", c)
	}
	g.Deployments[2].health.inflight.Store(1)
	c := counts(r, g, 10000, false)
	if c["d0"] != 0 {
		t.Fatalf("busiest chosen: %v", c)
	}
	within(t, "tie", c["d1"], 10000, 0.5)
}

func TestLatencyBasedAvoidsTheSlowOne(t *testing.T) {
	r, g := group(t, "latency-based-routing", &Deployment{}, &Deployment{}, &Deployment{})
	// Unmeasured deployments are tried first.
	observe(&g.Deployments[0].health.latency, 100*time.Millisecond)
	observe(&g.Deployments[1].health.latency, 100*time.Millisecond)
	if c := counts(r, g, 50, false); c["d2"] != 50 {
		t.Fatalf("unmeasured deployment not explored: %v", c)
	}
	observe(&g.Deployments[2].health.latency, 2*time.Second)
	c := counts(r, g, 10000, false)
	if c["d2"] != 0 {
		t.Fatalf("slow deployment chosen: %v", c)
	}
	// Near-equal deployments (within the 10% buffer) share the load.
	within(t, "near-equal", c["d0"], 10000, 0.5)
	// Streams are ranked by time to first token.
	observe(&g.Deployments[0].health.ttft, 900*time.Millisecond)
	observe(&g.Deployments[1].health.ttft, 50*time.Millisecond)
	observe(&g.Deployments[2].health.ttft, 60*time.Millisecond)
	c = counts(r, g, 1000, true)
	if c["d0"] != 0 || c["d1"] == 0 {
		t.Fatalf("stream ranking by ttft: %v", c)
	}
}

func TestUsageBasedNearRPM(t *testing.T) {
	r, g := group(t, "usage-based-routing-v2", &Deployment{RPM: 10}, &Deployment{RPM: 10})
	now := time.Now().UnixNano()
	for i := 0; i < 9; i++ {
		g.Deployments[0].health.countRequest(now)
	}
	for i := 0; i < 2; i++ {
		g.Deployments[1].health.countRequest(now)
	}
	if c := counts(r, g, 100, false); c["d1"] != 100 {
		t.Fatalf("should pick the one with headroom: %v", c)
	}
	for i := 0; i < 8; i++ {
		g.Deployments[1].health.countRequest(now)
	}
	g.Deployments[0].health.countRequest(now)
	// Both at their rpm: none is eligible.
	if c := counts(r, g, 10, false); c["<nil>"] != 10 {
		t.Fatalf("deployments at their rpm limit were chosen: %v", c)
	}
	// tpm counts too.
	r, g = group(t, "usage-based-routing-v2", &Deployment{TPM: 1000}, &Deployment{TPM: 1000})
	g.Deployments[0].Tokens(900)
	g.Deployments[1].Tokens(100)
	if c := counts(r, g, 100, false); c["d1"] != 100 {
		t.Fatalf("tpm headroom: %v", c)
	}
}

func TestCostBasedPicksCheapestHealthy(t *testing.T) {
	r, g := group(t, "cost-based-routing",
		&Deployment{Price: pricing.Price{Input: 5e-6, Output: 15e-6}},
		&Deployment{Price: pricing.Price{Input: 1e-7, Output: 4e-7}},
		&Deployment{}, // no price: last resort
	)
	if c := counts(r, g, 100, false); c["d1"] != 100 {
		t.Fatalf("cheapest: %v", c)
	}
	g.Deployments[1].health.cooldownUntil.Store(time.Now().Add(time.Minute).UnixNano())
	if c := counts(r, g, 100, false); c["d0"] != 100 {
		t.Fatalf("cheapest healthy: %v", c)
	}
}

func TestTagFiltering(t *testing.T) {
	r, g := group(t, "", &Deployment{Tags: []string{"eu"}}, &Deployment{Tags: []string{"us"}}, &Deployment{Tags: []string{"default"}})
	f := filter{now: time.Now().UnixNano(), tags: []string{"eu"}}
	for i := 0; i < 50; i++ {
		if d := r.pick(g, &f, false); d.ID != "d0" {
			t.Fatalf("tag eu picked %s", d.ID)
		}
	}
	f.tags = []string{"asia"}
	if d := r.pick(g, &f, false); d == nil || d.ID != "d2" {
		t.Fatalf("unmatched tags should use the default-tagged deployment, got %v", d)
	}
}

func TestMaxParallelRequests(t *testing.T) {
	r, g := group(t, "", &Deployment{MaxParallel: 2}, &Deployment{})
	g.Deployments[0].health.inflight.Store(2)
	if c := counts(r, g, 100, false); c["d1"] != 100 {
		t.Fatalf("deployment at max_parallel_requests chosen: %v", c)
	}
}

// BenchmarkPick chooses from a group of 10 with each strategy.
func BenchmarkPick(b *testing.B) {
	for _, s := range []string{"simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2", "cost-based-routing"} {
		b.Run(s, func(b *testing.B) {
			deps := make([]*Deployment, 10)
			for i := range deps {
				deps[i] = &Deployment{Weight: float64(i + 1), RPM: 1 << 30, TPM: 1 << 30, Price: pricing.Price{Input: float64(i+1) * 1e-6}, Tags: []string{"a"}}
			}
			r, g := group(b, s, deps...)
			for i, d := range g.Deployments {
				observe(&d.health.latency, time.Duration(100+i)*time.Millisecond)
			}
			f := filter{now: time.Now().UnixNano()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r.pick(g, &f, false) == nil {
					b.Fatal("nil")
				}
			}
		})
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	deps := make([]*Deployment, 10)
	for i := range deps {
		deps[i] = &Deployment{Weight: float64(i + 1)}
	}
	for _, s := range []string{"simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2", "cost-based-routing"} {
		r, g := group(t, s, deps...)
		f := filter{now: time.Now().UnixNano(), tags: nil}
		if a := testing.AllocsPerRun(1000, func() { r.pick(g, &f, false) }); a != 0 {
			t.Errorf("%s: %.1f allocations per pick", s, a)
		}
	}
}

func TestEstimateCoversFallbacks(t *testing.T) {
	cheap := &Deployment{ID: "c", ModelName: "cheap", Provider: nopProvider{}, Price: pricing.Price{Input: 1e-7, Output: 1e-7, MaxOutputTokens: 100}}
	dear := &Deployment{ID: "d", ModelName: "dear", Provider: nopProvider{}, Price: pricing.Price{Input: 1e-5, Output: 3e-5, MaxOutputTokens: 8000}}
	other := &Deployment{ID: "o", ModelName: "other", Provider: nopProvider{}, Price: pricing.Price{Input: 1e-4, Output: 1e-4}}
	r := New([]*Deployment{cheap, dear, other}, Settings{Fallbacks: map[string][]string{"cheap": {"dear"}}}, nil, nil)
	est, out := r.Estimate("cheap", nil, 1000, 0)
	// Priced at "dear" (its fallback), output capped at the larger cap.
	want := pricing.Estimate(pricing.Price{Input: 1e-5, Output: 3e-5}, 1000, 8000)
	if est != want || out != 8000 {
		t.Fatalf("estimate %d (out %d), want %d (8000)", est, out, want)
	}
	// A request's own fallbacks count too.
	est2, _ := r.Estimate("cheap", []string{"other"}, 1000, 10)
	if est2 < pricing.Estimate(pricing.Price{Input: 1e-4, Output: 1e-4}, 1000, 10) {
		t.Fatalf("request fallbacks not covered: %d", est2)
	}
}
