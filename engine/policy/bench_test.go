package policy

import (
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// accessData is data.portcullis for the access benchmark: n teams, each
// with model and provider globs, regions and a time window.
func accessData(n int) map[string]any {
	teams := make(map[string]any, n)
	for i := range n {
		teams[fmt.Sprintf("team-%05d", i)] = map[string]any{
			"models":    []any{"gpt-4o*", "claude-3-5-*", fmt.Sprintf("ft:team-%05d-*", i)},
			"providers": []any{"openai", "anthropic", "azure"},
			"regions":   []any{"eu", "us"},
			"hours":     map[string]any{"tz": "Europe/Berlin", "from": 0, "to": 24},
		}
	}
	return map[string]any{"portcullis": map[string]any{"access": map[string]any{"teams": teams}}}
}

// contentRules are 20 rules of the kinds the notes measured: secrets,
// prompt injection, personal data, topics.
var contentRules = map[string]any{
	"openai-key":      map[string]any{"pattern": `sk-[A-Za-z0-9_\-]{20,}`},
	"aws-key":         map[string]any{"pattern": `\bAKIA[0-9A-Z]{16}\b`},
	"github-token":    map[string]any{"pattern": `\bghp_[A-Za-z0-9]{36}\b`},
	"slack-token":     map[string]any{"pattern": `xox[baprs]-[A-Za-z0-9-]{10,}`},
	"private-key":     map[string]any{"pattern": `-----BEGIN (?:RSA |EC )?PRIVATE KEY-----`},
	"ignore-prev":     map[string]any{"pattern": `(?i)ignore (all )?(previous|prior|above) (instructions|rules)`},
	"dan":             map[string]any{"pattern": `(?i)\bdo anything now\b`},
	"dev-mode":        map[string]any{"pattern": `(?i)developer mode (enabled|on)`, "action": "flag"},
	"system-prompt":   map[string]any{"pattern": `(?i)(reveal|print|show) (your|the) system prompt`},
	"jailbreak":       map[string]any{"pattern": `(?i)\bjailbreak\b`, "action": "flag"},
	"ssn":             map[string]any{"pattern": `\b\d{3}-\d{2}-\d{4}\b`},
	"email":           map[string]any{"pattern": `[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`, "action": "flag"},
	"iban":            map[string]any{"pattern": `\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b`, "action": "flag"},
	"ipv4-internal":   map[string]any{"pattern": `\b10\.\d{1,3}\.\d{1,3}\.\d{1,3}\b`, "action": "flag"},
	"weapons":         map[string]any{"keywords": []any{"bomb", "explosive", "detonator"}},
	"drugs":           map[string]any{"keywords": []any{"methamphetamine", "fentanyl synthesis"}},
	"self-harm":       map[string]any{"pattern": `(?i)\b(kill|hurt) myself\b`},
	"competitor":      map[string]any{"pattern": `(?i)\bacme corp\b`, "action": "flag"},
	"confidential":    map[string]any{"pattern": `\b(CONFIDENTIAL|TOP SECRET)\b`},
	"password-inline": map[string]any{"pattern": `(?i)password\s*[:=]\s*\S{6,}`},
}

func contentData() map[string]any {
	return map[string]any{"portcullis": map[string]any{"content": map[string]any{
		"rules": contentRules, "max_prompt_bytes": 1 << 20, "max_tokens": 4096,
	}}}
}

// chatBody is a chat of 8 messages with about size bytes of English text.
func chatBody(size int, salt string) string {
	para := "The quarterly report covers revenue, churn and the roadmap for the next two releases. " +
		"Please summarise the main risks, list the open questions for the platform team, and suggest " +
		"three follow-ups with owners. Keep it short and use plain language for the wider audience. "
	var msgs []string
	msgs = append(msgs, `{"role":"system","content":"You are a careful assistant for internal analysis."}`)
	per := size / 7
	for i := 0; i < 7; i++ {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		text := strings.Repeat(para, per/len(para)+1)[:per]
		if i == 6 {
			text = salt + text[len(salt):]
		}
		msgs = append(msgs, fmt.Sprintf(`{"role":%q,"content":%q}`, role, text))
	}
	return `{"model":"gpt-4o-mini","max_tokens":512,"messages":[` + strings.Join(msgs, ",") + `]}`
}

// runDecisions measures the whole request phase (input building,
// evaluation, applying the decision) and reports the median and 99th
// percentile of wall time and the median of the thread's CPU time.
func runDecisions(b *testing.B, e *Engine, mk func(i int) *pipeline.Exchange) {
	b.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	mw := e.Middleware()
	next := func(*pipeline.Exchange) error { return nil }
	durs := make([]time.Duration, 0, b.N)
	cpus := make([]int64, 0, b.N)
	b.ReportAllocs()
	// The setup (10,000 teams parsed, converted, compiled) leaves tens of MB
	// of garbage; collect it now rather than in the measured loop.
	runtime.GC()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x := mk(i)
		c := threadCPU()
		t := time.Now()
		if err := mw.Serve(x, next); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(t))
		cpus = append(cpus, threadCPU()-c)
	}
	b.StopTimer()
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	slices.Sort(cpus)
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(cpus[len(cpus)/2]), "p50-cpu-ns")
}

// BenchmarkAccess10kTeams is the shipped team-access policy (plus the
// other shipped packages with nothing configured) deciding for one team of
// 10,000.
func BenchmarkAccess10kTeams(b *testing.B) {
	dir := shippedCopy(b, false, accessData(10_000))
	e, _ := newEngine(b, config.PolicySettings{Dir: dir, SkipTests: true})
	e.provider = func(string) []string { return []string{"openai"} }
	body := `{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there, what can you do?"}]}`
	runDecisions(b, e, func(i int) *pipeline.Exchange {
		x := exchange(body)
		x.TeamID = fmt.Sprintf("team-%05d", i%10_000)
		x.KeyAlias = "k"
		return x
	})
}

// BenchmarkContent20Rules4KiB is the shipped content policy with 20 rules
// over a 4 KiB chat; "cold" changes the last message every time (no
// result cache hit for it), "warm" repeats the request.
func BenchmarkContent20Rules4KiB(b *testing.B) {
	dir := shippedCopy(b, false, contentData())
	e, _ := newEngine(b, config.PolicySettings{Dir: dir, SkipTests: true})
	b.Run("cold", func(b *testing.B) {
		runDecisions(b, e, func(i int) *pipeline.Exchange { return exchange(chatBody(4096, fmt.Sprintf("n%08d ", i))) })
	})
	b.Run("warm", func(b *testing.B) {
		body := chatBody(4096, "same ")
		runDecisions(b, e, func(int) *pipeline.Exchange { return exchange(body) })
	})
	b.Run("nocache", func(b *testing.B) {
		cur := e.cur.Load()
		saved := cur.builtins.cache
		cur.builtins.cache = nil
		defer func() { cur.builtins.cache = saved }()
		body := chatBody(4096, "same ")
		runDecisions(b, e, func(int) *pipeline.Exchange { return exchange(body) })
	})
}

// BenchmarkMatcher is the Go matcher alone: 20 rules over 4 KiB.
func BenchmarkMatcher(b *testing.B) {
	var specs []patternSpec
	for id, r := range contentRules {
		m := r.(map[string]any)
		p, _ := m["pattern"].(string)
		if kw, ok := m["keywords"].([]any); ok {
			words := make([]string, len(kw))
			for i, w := range kw {
				words[i] = w.(string)
			}
			p = keywordPattern(words)
		}
		specs = append(specs, patternSpec{id: id, pattern: p})
	}
	m, err := newMatcher(1, specs)
	if err != nil {
		b.Fatal(err)
	}
	text := chatBody(4096, "x")
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		m.match(text)
	}
}

// BenchmarkFloor is a constant decision through the same path: what OPA's
// evaluation costs on this machine before any policy logic.
func BenchmarkFloor(b *testing.B) {
	dir := b.TempDir()
	writeFiles(b, dir, map[string]string{"gateway/p.rego": "package gateway\n\ndecision := {\"allow\": true}\n"})
	e, _ := newEngine(b, config.PolicySettings{Dir: dir, SkipTests: true})
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}`
	runDecisions(b, e, func(int) *pipeline.Exchange { return exchange(body) })
}

// BenchmarkRegexpAll is what the matcher replaces: every pattern's regexp
// over the whole text, as regex.match in Rego would run them.
func BenchmarkRegexpAll(b *testing.B) {
	var res []*regexp.Regexp
	for _, r := range contentRules {
		m := r.(map[string]any)
		p, _ := m["pattern"].(string)
		if kw, ok := m["keywords"].([]any); ok {
			words := make([]string, len(kw))
			for i, w := range kw {
				words[i] = w.(string)
			}
			p = keywordPattern(words)
		}
		res = append(res, regexp.MustCompile(p))
	}
	text := chatBody(4096, "x")
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		for _, re := range res {
			re.MatchString(text)
		}
	}
}
