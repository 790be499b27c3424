package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// benchMaster is the master key of the gateways of (b) and (f).
const benchMaster = "sk-bench-master"

// pipelineTeam is the team of (b)'s virtual key; otherTeams more teams
// fill the policies' access data so that its lookup is not in a table of
// one.
const (
	pipelineTeam = "bench-team"
	otherTeams   = 10000
)

// pipelineKeyBody is the virtual key (b) sends with: in pipelineTeam, with
// limits far above what the run can reach, so that every check runs and
// none refuses.
const pipelineKeyBody = `{"team_id": "` + pipelineTeam + `", "max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 1000000000}`

// contentRules are (b)'s 20 content rules (those of engine/policy's
// benchmarks: secrets, prompt injection, personal data, topics). None
// matches the bench prompt, so every request is allowed after all of them
// ran.
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

// pipelineData is data.portcullis of (b)'s policies: team access for
// pipelineTeam among otherTeams others, the content rules, PII actions.
func pipelineData() ([]byte, error) {
	teams := make(map[string]any, otherTeams+1)
	for i := range otherTeams {
		teams[fmt.Sprintf("team-%05d", i)] = map[string]any{
			"models":    []any{"gpt-4o*", "claude-3-5-*", fmt.Sprintf("ft:team-%05d-*", i)},
			"providers": []any{"openai", "anthropic", "azure"},
			"regions":   []any{"eu", "us"},
			"hours":     map[string]any{"tz": "Europe/Berlin", "from": 0, "to": 24},
		}
	}
	// The bench's model group is "bench" (openai/bench at the fake upstream).
	teams[pipelineTeam] = map[string]any{"models": []any{"gpt-4o*", "bench*"}, "providers": []any{"openai"}}
	return json.Marshal(map[string]any{"portcullis": map[string]any{
		"access":  map[string]any{"teams": teams},
		"content": map[string]any{"rules": contentRules, "max_prompt_bytes": 1 << 20, "max_tokens": 4096},
		"pii":     map[string]any{"actions": map[string]any{"email": "redact", "phone": "flag", "card": "deny", "secret": "deny"}},
	}})
}

// writePolicies copies the shipped policies (every file of src: the
// modules and their tests, which the gateway runs when it loads them) into
// dir/policies and writes (b)'s data.json beside them. It returns that
// directory.
func writePolicies(src, dir string) (string, error) {
	out := filepath.Join(dir, "policies")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return "", fmt.Errorf("policies: %w", err)
	}
	n := 0
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".rego") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), data, 0o644); err != nil {
			return "", err
		}
		n++
	}
	if n == 0 {
		return "", fmt.Errorf("policies: no .rego file in %s", src)
	}
	data, err := pipelineData()
	if err != nil {
		return "", err
	}
	return out, os.WriteFile(filepath.Join(out, "data.json"), data, 0o644)
}

// pluginModule returns the .wasm of (b)'s plugin as an absolute path: the
// one `make plugins` built, else one built now into the output directory
// with the plugin's build.sh (which needs the C toolchain `make
// toolchains` installs).
func (b *bench) pluginModule(path string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return filepath.Abs(path)
	}
	out, err := filepath.Abs(filepath.Join(b.out, filepath.Base(path)))
	if err != nil {
		return "", err
	}
	script := filepath.Join(filepath.Dir(path), "build.sh")
	b.log("%s missing: building it with %s", path, script)
	if msg, err := exec.Command("sh", script, out).CombinedOutput(); err != nil {
		return "", fmt.Errorf("plugin %s missing and %s failed (%v): %s; build it with make plugins (after make toolchains)", path, script, err, bytes.TrimSpace(msg))
	}
	return out, nil
}

// startPipelineGateway starts a gateway of (b) (master key, policies,
// the plugin; trusted or not), creates its team and its virtual key
// through the admin API.
func (b *bench) startPipelineGateway(bin string, upPort int, trusted bool) (*target, error) {
	name, key, label := "portcullis-full", "pcfull", "portcullis full pipeline"
	if !trusted {
		name, key, label = "portcullis-full-untrusted", "pcfullu", "portcullis full pipeline (plugin untrusted)"
	}
	dir, err := b.runDir(name)
	if err != nil {
		return nil, err
	}
	pdir, err := writePolicies(b.policySrc, dir)
	if err != nil {
		return nil, err
	}
	t, err := b.launchGateway(bin, name, dir, gwOpts{upPort: upPort, master: benchMaster, policyDir: pdir, plugin: b.plugin, trusted: trusted})
	if err != nil {
		return nil, err
	}
	t.key, t.name, t.vary = key, label, true
	if err := adminPost(t.addr, benchMaster, "/team/new", `{"team_id": "`+pipelineTeam+`", "team_alias": "`+pipelineTeam+`"}`, nil); err != nil {
		return nil, fmt.Errorf("%s: %w (see %s)", t.name, err, t.proc.log)
	}
	secret, err := generateKey(t.addr, benchMaster, pipelineKeyBody)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (see %s)", t.name, err, t.proc.log)
	}
	t.header = []string{"Authorization: Bearer " + secret}
	return t, nil
}

// generateKey calls POST /key/generate and returns the new key.
func generateKey(addr, master, body string) (string, error) {
	var out struct {
		Key string `json:"key"`
	}
	if err := adminPost(addr, master, "/key/generate", body, &out); err != nil {
		return "", err
	}
	if out.Key == "" {
		return "", fmt.Errorf("POST /key/generate: no key in the answer")
	}
	return out.Key, nil
}

// adminPost calls an admin endpoint with the master key and decodes the
// answer into out (if not nil).
func adminPost(addr, master, path, body string, out any) error {
	req, err := http.NewRequest("POST", "http://"+addr+path, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+master)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("POST %s: HTTP %d: %.300s", path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("POST %s: %w in %.300s", path, err, data)
		}
	}
	return nil
}

// requestNumber is the placeholder of the request number in the prompt of
// a target with vary set: nine digits, rewritten for every request.
const requestNumber = "000000000"

// variedRequest builds t's requests with request i's number in the user
// message: every prompt is new to the policy engine's per-text result
// cache, as the last message of a real conversation is (the system
// message repeats, and hits it).
func (b *bench) variedRequest(t *target) func(int64, []byte) ([]byte, int) {
	tmpl := b.request(t, false, false).RequestBytes()
	at := bytes.Index(tmpl, []byte(requestNumber))
	return func(i int64, buf []byte) ([]byte, int) {
		buf = append(buf, tmpl...)
		for j, v := at+len(requestNumber)-1, i; j >= at; j-- {
			buf[j] = byte('0' + v%10)
			v /= 10
		}
		return buf, -1 // no class
	}
}

// build returns the per-request builder of t for the open and closed
// loops of (a), (b) and the throughput run: nil (fixed bytes) unless t
// varies its prompt.
func (b *bench) build(t *target) func(int64, []byte) ([]byte, int) {
	if t.vary {
		return b.variedRequest(t)
	}
	return nil
}

// stageNote says, from a (b) gateway's /metrics at the end of the run,
// how many policy decisions and plugin calls it made and their mean time
// (wall time: under load it includes waiting for a CPU).
func stageNote(name string, m map[string]float64) string {
	if m == nil {
		return ""
	}
	mean := func(sum, count float64) string {
		if count == 0 {
			return "—"
		}
		return usf(sum / count * 1e6)
	}
	allow := sumMetric(m, "portcullis_policy_decisions_total", `phase="request"`, `result="allow"`)
	deny := sumMetric(m, "portcullis_policy_decisions_total", `phase="request"`, `result="deny"`)
	perr := sumMetric(m, "portcullis_policy_decisions_total", `phase="request"`, `result="error"`)
	es, ec := sumMetric(m, "portcullis_policy_eval_seconds_sum", `phase="request"`), sumMetric(m, "portcullis_policy_eval_seconds_count", `phase="request"`)
	calls := sumMetric(m, "portcullis_plugin_calls_total", `hook="on_request"`)
	perrs := sumMetric(m, "portcullis_plugin_errors_total", `hook="on_request"`)
	ps, pc := sumMetric(m, "portcullis_plugin_duration_seconds_sum", `hook="on_request"`), sumMetric(m, "portcullis_plugin_duration_seconds_count", `hook="on_request"`)
	return fmt.Sprintf("%s, from its `/metrics` after the run (warm-ups and probes included): %.0f request-phase policy decisions (%.0f allow, %.0f deny, %.0f error), %s per evaluation on average; %.0f plugin `on_request` calls (%.0f failed), %s per call on average. Both means are wall time, including any wait for a CPU.",
		name, allow+deny+perr, allow, deny, perr, mean(es, ec), calls, perrs, mean(ps, pc))
}
