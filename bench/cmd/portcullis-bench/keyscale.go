package main

import (
	"bytes"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/bench/internal/loadgen"
	"github.com/portcullis/portcullis/bench/internal/procstat"
)

// Classes of a request of (f), as the generator knows them.
const (
	classFirst  = 0 // the first request with its key since the gateway started: a cache miss, so a SQLite read
	classRepeat = 1 // its key was sent before: a hit, if the cache kept it
)

// keyset is the keys of one (f) gateway, benchSecret(0) … benchSecret(n-1),
// and which of them the generator has sent so far.
type keyset struct {
	n       int
	touched []atomic.Uint64 // bit i: key i was sent
	seq     atomic.Uint64
	// seeding, and the gateway before any load
	seedTime  time.Duration
	dbBytes   int64
	memBefore procstat.Mem
	// the gateway's Go runtime gauges (/metrics) before and after the scenario
	rtBefore, rtAfter map[string]float64
}

func newKeyset(n int) *keyset {
	return &keyset{n: n, touched: make([]atomic.Uint64, (n+63)/64)}
}

// pick returns a key uniformly at random (a fixed sequence: splitmix64 of a
// counter), safe for concurrent use.
func (k *keyset) pick() int {
	z := k.seq.Add(1) * 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return int(z % uint64(k.n))
}

// touch marks key i as sent and reports whether it had been before.
func (k *keyset) touch(i int) (seen bool) {
	bit := uint64(1) << (i % 64)
	return k.touched[i/64].Or(bit)&bit != 0
}

// distinct is the number of keys sent so far.
func (k *keyset) distinct() int {
	n := 0
	for i := range k.touched {
		n += bits.OnesCount64(k.touched[i].Load())
	}
	return n
}

// startKeysGateway seeds n keys into a fresh database with the seed-keys
// subcommand (its own process), then starts a gateway on it with a master
// key and key_cache_size n.
func (b *bench) startKeysGateway(bin, self string, upPort, n int) (*target, error) {
	name := fmt.Sprintf("portcullis-keys-%d", n)
	dir, err := b.runDir(name)
	if err != nil {
		return nil, err
	}
	ks := newKeyset(n)
	db := filepath.Join(dir, "portcullis.db")
	t0 := time.Now()
	c, err := start("seed-keys", "", filepath.Join(b.out, name+"-seed.log"), self, "seed-keys", "-db", db, "-n", strconv.Itoa(n))
	if err != nil {
		return nil, err
	}
	<-c.done
	if c.err != nil {
		return nil, fmt.Errorf("seed-keys -n %d: %v (see %s)", n, c.err, c.log)
	}
	ks.seedTime = time.Since(t0)
	if fi, err := os.Stat(db); err == nil {
		ks.dbBytes = fi.Size()
	}
	b.log("seeded %d keys into %s in %v", n, db, ks.seedTime.Round(time.Millisecond))
	t, err := b.launchGateway(bin, name, dir, gwOpts{upPort: upPort, master: benchMaster, cacheKeys: n})
	if err != nil {
		return nil, err
	}
	t.key, t.name, t.ks = fmt.Sprintf("keys%d", n), thousands(n)+" keys", ks
	// The probe (and the template of every request) uses key 0.
	t.header = []string{"Authorization: Bearer " + benchSecret(0)}
	ks.touch(0)
	return t, nil
}

// keyRequest builds (f)'s requests to t: each with a key picked uniformly
// among t's, classed by whether the generator sent that key before.
func (b *bench) keyRequest(t *target) func(int64, []byte) ([]byte, int) {
	tmpl := b.request(t, false, false).RequestBytes()
	at := bytes.Index(tmpl, []byte(benchSecret(0))) + len("sk-bench-")
	ks := t.ks
	return func(_ int64, buf []byte) ([]byte, int) {
		k := ks.pick()
		buf = append(buf, tmpl...)
		for j, v := at+8, k; j >= at; j-- {
			buf[j] = byte('0' + v%10)
			v /= 10
		}
		if ks.touch(k) {
			return buf, classRepeat
		}
		return buf, classFirst
	}
}

// keyLookup is scenario (f): one gateway per key table size, driven at a
// fixed rate with the keys spread uniformly, taking turns with direct.
func (b *bench) keyLookup(r *results) (err error) {
	m := b.m
	for _, t := range b.keyTargets {
		t.ks.memBefore, _ = procstat.ReadMem(t.proc.pid())
		t.ks.rtBefore = scrapeRuntime(t.addr)
	}
	defer func() {
		for _, t := range b.keyTargets {
			t.ks.rtAfter = scrapeRuntime(t.addr)
		}
	}()
	b.log("(f) virtual keys %v: open loop %v req/s spread uniformly over the keys, %d rounds of %v (after %v warm-up) per path, %d connections",
		m.keySizes, m.kfRate, m.rounds, m.ptDur, m.warmup, m.ptConns)
	r.keys, err = b.rounds(append([]*target{b.direct}, b.keyTargets...), func(t *target, w *window) (*loadgen.Result, error) {
		cfg := loadgen.OpenConfig{
			Target: b.request(t, false, false), Rate: m.kfRate, Warmup: m.warmup, Duration: m.ptDur,
			Conns: m.ptConns, OnWindow: w.on,
		}
		if t.ks != nil {
			cfg.Request = b.keyRequest(t)
		}
		return loadgen.RunOpen(cfg)
	}, func(s *side) string {
		l := fmt.Sprintf("p50 %s p99 %s  CPU/req %s  errors %d %s", us(s.res.Latency.Quantile(.5)), us(s.res.Latency.Quantile(.99)), usf(s.cpuPerReq()), s.res.Errors, s.res.FirstErr)
		if s.t.ks != nil {
			l += fmt.Sprintf("  first-touch %.1f%%  RSS %s", 100*firstShare(s.res), mib(s.mem.RSS))
		}
		return l
	})
	return err
}

// firstShare is the share of the measured requests that were the first
// with their key.
func firstShare(res *loadgen.Result) float64 {
	var first, all int64
	for c, h := range res.ByClass {
		all += h.Count()
		if c == classFirst {
			first += h.Count()
		}
	}
	if all == 0 {
		return 0
	}
	return float64(first) / float64(all)
}

// thousands formats n with commas: 1,000,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
