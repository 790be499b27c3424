// Package report turns portcullis-bench measurements into the markdown
// table of bench/RESULTS.md, embeds the headline numbers in it as JSON,
// and compares them with the previous run's.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
)

// MetricsTag starts the machine-readable line at the end of RESULTS.md.
const MetricsTag = "<!-- portcullis-bench metrics "

// Metrics are the headline numbers a run is compared on, by key.
type Metrics map[string]float64

// Rule says which direction is worse for a metric and below what size a
// change is noise.
type Rule struct {
	Key          string
	Label        string
	HigherBetter bool
	// Floor: a change is a regression only if it exceeds 10% of
	// max(|previous|, Floor). Added latencies of a few microseconds would
	// otherwise flag on timer noise.
	Floor float64
}

// Rules are the compared metrics (the issue asks for added latency p50
// and p99, throughput and CPU per request; idle RSS is checked too; the
// full pipeline of (b) and the cache hit of (d) likewise, and (f) at
// 1,000,000 keys, which only -mode full measures).
var Rules = []Rule{
	{Key: "passthrough.added_p50_us", Label: "pass-through added latency p50 (µs)", Floor: 5},
	{Key: "passthrough.added_p99_us", Label: "pass-through added latency p99 (µs)", Floor: 5},
	{Key: "stream.ttfb_added_p50_us", Label: "streaming TTFB added p50 (µs)", Floor: 5},
	{Key: "stream.ttfb_added_p99_us", Label: "streaming TTFB added p99 (µs)", Floor: 5},
	{Key: "stream.gap_added_p99_us", Label: "streaming inter-chunk added p99 (µs)", Floor: 5},
	{Key: "throughput.rps", Label: "max throughput (req/s)", HigherBetter: true},
	{Key: "passthrough.cpu_us_per_req", Label: "gateway CPU per request at the fixed rate (µs)", Floor: 1},
	{Key: "throughput.cpu_us_per_req", Label: "gateway CPU per request at max throughput (µs)", Floor: 1},
	{Key: "idle.rss_mib", Label: "gateway RSS with the idle streams (MiB)", Floor: 1},
	{Key: "idle.rss_reduce_memory_mib", Label: "gateway RSS with the idle streams, server.reduce_memory (MiB)", Floor: 1},
	// (b) with policies and a plugin; the earlier "pipeline.*" keys were
	// (b) without them, not compared with these.
	{Key: "fullpipeline.added_p50_us", Label: "full pipeline added latency p50 (µs)", Floor: 5},
	{Key: "fullpipeline.added_p99_us", Label: "full pipeline added latency p99 (µs)", Floor: 5},
	{Key: "fullpipeline.rps", Label: "full pipeline max throughput (req/s)", HigherBetter: true},
	{Key: "fullpipeline.cpu_us_per_req", Label: "full pipeline CPU per request at the fixed rate (µs)", Floor: 1},
	{Key: "cache.added_p50_us", Label: "cache hit added latency p50 (µs)", Floor: 5},
	{Key: "cache.added_p99_us", Label: "cache hit added latency p99 (µs)", Floor: 5},
	{Key: "cache.cpu_us_per_req", Label: "cache hit CPU per request (µs)", Floor: 1},
	{Key: "keys.1000000.added_p50_us", Label: "1,000,000 keys: added latency p50 (µs)", Floor: 5},
	{Key: "keys.1000000.cpu_us_per_req", Label: "1,000,000 keys: gateway CPU per request (µs)", Floor: 1},
	{Key: "keys.1000000.rss_mib", Label: "1,000,000 keys: gateway RSS after (MiB)", Floor: 1},
}

// Threshold is the relative change flagged.
const Threshold = 0.10

// Regression is one metric that got worse by more than Threshold.
type Regression struct {
	Rule     Rule
	Old, New float64
	// Change is relative to max(|Old|, Floor), positive = worse.
	Change float64
}

func (r Regression) String() string {
	return fmt.Sprintf("REGRESSION %s: %.4g -> %.4g (%+.0f%% worse)", r.Rule.Label, r.Old, r.New, 100*r.Change)
}

// Compare returns the metrics that are worse in cur than in prev by more
// than Threshold, and the keys present in both.
func Compare(prev, cur Metrics) (regs []Regression, compared []string) {
	for _, rule := range Rules {
		o, ok1 := prev[rule.Key]
		n, ok2 := cur[rule.Key]
		if !ok1 || !ok2 || math.IsNaN(o) || math.IsNaN(n) {
			continue
		}
		compared = append(compared, rule.Key)
		ref := math.Max(math.Abs(o), rule.Floor)
		if ref == 0 {
			continue
		}
		worse := n - o
		if rule.HigherBetter {
			worse = o - n
		}
		if ch := worse / ref; ch > Threshold {
			regs = append(regs, Regression{Rule: rule, Old: o, New: n, Change: ch})
		}
	}
	return regs, compared
}

// Header is the run's identity, embedded with the metrics.
type Header struct {
	Mode    string `json:"mode"`
	Machine string `json:"machine"`
	Cores   int    `json:"cores"`
	Go      string `json:"go"`
	Commit  string `json:"commit"`
	Date    string `json:"date"`
}

type embedded struct {
	Header
	Metrics Metrics `json:"metrics"`
}

// MetricsLine is the line embedded at the end of RESULTS.md.
func MetricsLine(h Header, m Metrics) string {
	b, _ := json.Marshal(embedded{Header: h, Metrics: m})
	return MetricsTag + string(b) + " -->"
}

var metricsRe = regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(MetricsTag) + `(\{.*\}) -->\s*$`)

// ParseResults finds the embedded line in a previous RESULTS.md.
func ParseResults(md string) (Header, Metrics, error) {
	m := metricsRe.FindStringSubmatch(md)
	if m == nil {
		return Header{}, nil, fmt.Errorf("no %q line", strings.TrimSpace(MetricsTag))
	}
	var e embedded
	if err := json.Unmarshal([]byte(m[1]), &e); err != nil {
		return Header{}, nil, err
	}
	return e.Header, e.Metrics, nil
}

// Keys returns m's keys sorted.
func Keys(m Metrics) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
