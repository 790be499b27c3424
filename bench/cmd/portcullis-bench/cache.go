package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/portcullis/portcullis/bench/internal/loadgen"
	"github.com/portcullis/portcullis/bench/internal/upstream"
)

// cacheBody is (d)'s request: deterministic (temperature 0), so the
// gateway's response cache stores the first answer and serves every
// identical request after it; model bench-large is the upstream's 4 KiB
// answer.
const cacheBody = `{"model":%q,"messages":[{"role":"system","content":"You are a helpful assistant."},` +
	`{"role":"user","content":"Say hello to the benchmark, at length."}],"temperature":0,"max_tokens":1024}`

// cacheHeader is what a response served from the cache carries.
var cacheHeader = loadgen.Header{Name: "x-cache", Value: "HIT"}

// cacheRequest is (d)'s request to t: every request of the scenario is
// the same bytes.
func (b *bench) cacheRequest(t *target) loadgen.Target {
	model, path := "bench-large", "/v1/chat/completions"
	if !t.gateway {
		model, path = "bench", "/large/v1/chat/completions"
	}
	return loadgen.Target{Name: t.name, Addr: t.addr, Path: path, Body: fmt.Appendf(nil, cacheBody, model), Header: t.header}
}

// cachePaths are the paths measured in (d): direct, the pass-through
// gateway (no cache: it calls the upstream) and the cache gateway. The
// bare hop is left out to keep make bench under 3 minutes; (a) relates
// the pass-through gateway to it.
func (b *bench) cachePaths() []*target {
	return []*target{b.direct, b.pc, b.pcCache}
}

// post sends t's (d) request once with net/http and returns the x-cache
// header and the body.
func post(req loadgen.Target) (xcache string, body []byte, err error) {
	hr, err := http.NewRequest("POST", "http://"+req.Addr+req.Path, bytes.NewReader(req.Body))
	if err != nil {
		return "", nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	for _, h := range req.Header {
		k, v, _ := strings.Cut(h, ":")
		hr.Header.Set(k, strings.TrimSpace(v))
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(hr)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, body)
	}
	return resp.Header.Get(cacheHeader.Name), body, err
}

// upstreamRequests is the number of chat requests the fake upstream has
// served (its GET /stats).
func (b *bench) upstreamRequests() (int64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + b.direct.addr + "/stats")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var s struct {
		Requests int64 `json:"requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return 0, fmt.Errorf("upstream /stats: %w", err)
	}
	return s.Requests, nil
}

// probeCache checks, before (d) is measured, that its request gets the
// 4 KiB answer from the paths without a cache, and that the cache gateway stores the first
// answer (x-cache: MISS) and serves the second from the cache (x-cache:
// HIT, the same body, no upstream request). The entry stored here is the
// one every measured request hits.
func (b *bench) probeCache() error {
	want := len(upstream.LargeCompletionBody)
	for _, t := range []*target{b.direct, b.pc} {
		x, body, err := post(b.cacheRequest(t))
		switch {
		case err != nil:
			return fmt.Errorf("probe (d) %s: %w (see %s)", t.name, err, t.proc.log)
		case x != "":
			return fmt.Errorf("probe (d) %s: x-cache: %s on a path without a cache", t.name, x)
		case len(body) < want*9/10:
			return fmt.Errorf("probe (d) %s: a %d-byte answer, want about %d", t.name, len(body), want)
		}
	}
	t := b.pcCache
	req := b.cacheRequest(t)
	x, first, err := post(req)
	if err != nil {
		return fmt.Errorf("probe (d) %s: %w (see %s)", t.name, err, t.proc.log)
	}
	if x != "MISS" {
		return fmt.Errorf("probe (d) %s: first request x-cache: %q, want MISS (is the response cache on? see %s)", t.name, x, t.proc.log)
	}
	n0, err := b.upstreamRequests()
	if err != nil {
		return err
	}
	x, second, err := post(req)
	if err != nil {
		return fmt.Errorf("probe (d) %s: %w (see %s)", t.name, err, t.proc.log)
	}
	n1, err := b.upstreamRequests()
	if err != nil {
		return err
	}
	switch {
	case x != cacheHeader.Value:
		return fmt.Errorf("probe (d) %s: the second identical request got x-cache: %q, want HIT: the cache does not serve hits (see %s)", t.name, x, t.proc.log)
	case n1 != n0:
		return fmt.Errorf("probe (d) %s: a cache hit called the upstream (%d requests)", t.name, n1-n0)
	case !bytes.Equal(first, second):
		return fmt.Errorf("probe (d) %s: the hit's body differs from the stored answer", t.name)
	case len(second) < want*9/10:
		return fmt.Errorf("probe (d) %s: a %d-byte answer, want about %d", t.name, len(second), want)
	}
	b.cacheBytes = len(second)
	return nil
}

// primeCache makes sure, just before (d) is measured, that the entry is in
// the cache: the one stored by probeCache may have expired since (the
// default TTL is 10 minutes, and in full mode (a) and the throughput run
// last longer than that).
func (b *bench) primeCache() error {
	t := b.pcCache
	for range 2 {
		x, _, err := post(b.cacheRequest(t))
		if err != nil {
			return fmt.Errorf("(d) %s: %w (see %s)", t.name, err, t.proc.log)
		}
		if x == cacheHeader.Value {
			return nil
		}
	}
	return fmt.Errorf("(d) %s: no x-cache: HIT for the second identical request: the cache does not serve hits (see %s)", t.name, t.proc.log)
}

// cacheHit is scenario (d): the same deterministic request at a fixed
// rate; the cache gateway answers it from its cache, the others from the
// upstream. Each response of the cache gateway is checked for x-cache:
// HIT, and the upstream's request count over its rounds must not move.
func (b *bench) cacheHit(r *results) (err error) {
	m := b.m
	b.log("(d) cache hit: open loop %v req/s, the same temperature-0 request (a %d-byte answer), %d rounds of %v (after %v warm-up) per path, %d connections",
		m.ptRate, len(upstream.LargeCompletionBody), m.rounds, m.ptDur, m.warmup, m.ptConns)
	if err := b.primeCache(); err != nil {
		return err
	}
	r.cacheCalls = map[string]int64{}
	r.cache, err = b.rounds(b.cachePaths(), func(t *target, w *window) (*loadgen.Result, error) {
		n0, err := b.upstreamRequests()
		if err != nil {
			return nil, err
		}
		res, err := loadgen.RunOpen(loadgen.OpenConfig{
			Target: b.cacheRequest(t), Rate: m.ptRate, Warmup: m.warmup, Duration: m.ptDur,
			Conns: m.ptConns, OnWindow: w.on, Match: cacheHeader,
		})
		if err != nil {
			return nil, err
		}
		n1, err := b.upstreamRequests()
		r.cacheCalls[t.key] += n1 - n0
		return res, err
	}, func(s *side) string {
		return fmt.Sprintf("p50 %s p99 %s  CPU/req %s  x-cache HIT %d/%d  upstream calls %d  errors %d %s", us(s.res.Latency.Quantile(.5)), us(s.res.Latency.Quantile(.99)),
			usf(s.cpuPerReq()), s.res.Matched, s.res.OK, r.cacheCalls[s.t.key], s.res.Errors, s.res.FirstErr)
	})
	if err != nil {
		return err
	}
	if c := find(r.cache, "pccache"); !cacheHits(c, r.cacheCalls["pccache"]) {
		b.log("CACHE NOT HIT: %s answered %d of %d measured requests with x-cache: HIT and the upstream served %d requests during its rounds: (d) does not measure cache hits",
			c.t.name, c.res.Matched, c.res.OK, r.cacheCalls["pccache"])
	}
	return nil
}

// cacheHits reports whether every request of the cache side was a hit:
// all answered, all with x-cache: HIT, none reaching the upstream.
func cacheHits(c *side, upstreamCalls int64) bool {
	return c.res.OK > 0 && c.res.Errors == 0 && c.res.Matched == c.res.OK && upstreamCalls == 0
}
