package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/policy"
	"github.com/portcullis/portcullis/engine/store"
)

// principalPolicy reads the key's budget and metadata from
// input.principal and the request's price from input.llm.estimated_cost:
// a request may take at most half of what is left of the key's budget, and
// no more than the key's metadata.max_request_usd.
const principalPolicy = `package gateway

import rego.v1

p := input.principal

cost := input.llm.estimated_cost

too_big if {
	is_number(p.budget.remaining)
	is_number(cost)
	p.budget.remaining < cost * 2
}

over_cap if {
	is_number(p.metadata.max_request_usd)
	is_number(cost)
	cost > p.metadata.max_request_usd
}

deny(code, status, msg) := {"allow": false, "status": status, "reasons": [{"code": code, "status": status, "message": msg}]}

decision := deny("budget_too_low", 402, sprintf("estimated %v USD, %v USD left", [cost, p.budget.remaining])) if too_big
else := deny("request_cap", 403, sprintf("estimated %v USD, cap %v USD", [cost, p.metadata.max_request_usd])) if over_cap
else := {"allow": true, "tags": [sprintf("dept:%v", [object.get(p.metadata, "department", "none")])]}
`

// TestPolicyReadsKeyBudgetAndMetadata: keys made with /key/generate
// (max_budget, metadata) are decided by a policy that reads their budget,
// their metadata and the request's estimated cost; the spend a request
// settles is what the next decision reads.
func TestPolicyReadsKeyBudgetAndMetadata(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gateway.rego"), []byte(principalPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	// The policy prices requests with the model list's prices, as the
	// gateway wires it (cmd/portcullis: the current snapshot's
	// Runtime.GroupPrice); here a runtime built from the same config.
	cfg, err := config.Parse([]byte(keysConfig), "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	prices, err := gateway.Build(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gateway.NewHolder(prices).Close)
	eng, err := policy.New(config.PolicySettings{Dir: dir, Timeout: 5 * time.Second}, policy.Options{Price: prices.GroupPrice})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	h := newStackOpts(t, keysConfig, func(o *gateway.Options) { o.Policy = eng.Middleware() })

	// m costs 1 µ$ per output token, input free: max_tokens 100 is
	// estimated at 0.0001 USD, by the key stage and by the policy alike.
	body := func(maxTokens int) string {
		return fmt.Sprintf(`{"model":"m","max_tokens":%d,"messages":[{"role":"user","content":"hi"}]}`, maxTokens)
	}
	gen := `{"max_budget": 0.0002, "metadata": {"department": "finance", "max_request_usd": 0.00015}}`
	a := h.admin("/key/generate", gen)["key"].(string)
	b := h.admin("/key/generate", gen)["key"].(string)

	// A fresh key: 0.0002 left, 0.0001 asked: allowed.
	if r, out := h.post("/v1/chat/completions", body(100), "Authorization", "Bearer "+b); r.StatusCode != 200 {
		t.Fatalf("fresh key, max_tokens 100: %d %s", r.StatusCode, out)
	}
	// Key a spends a little first...
	if r, out := h.post("/v1/chat/completions", body(50), "Authorization", "Bearer "+a); r.StatusCode != 200 {
		t.Fatalf("max_tokens 50: %d %s", r.StatusCode, out)
	}
	acct, ok := h.km.KeyAccount(keys.Hash(a))
	if !ok || acct.Spent() <= 0 || acct.Spent() > 50_000 {
		t.Fatalf("key a's spend after one request: %v %d", ok, acct.Spent())
	}
	// ...and the same request the fresh key was allowed is now denied by
	// the policy (the key stage would admit it: spend + 0.0001 is within
	// the budget), with the numbers the policy read.
	r, out := h.post("/v1/chat/completions", body(100), "Authorization", "Bearer "+a)
	left := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.9f", float64(200_000-acct.Spent())/1e9), "0"), ".")
	if r.StatusCode != 402 || principalErrCode(out) != "budget_too_low" ||
		!strings.Contains(string(out), "estimated 0.0001 USD, "+left+" USD left") {
		t.Fatalf("after spending: %d %s (want 402 budget_too_low, %s USD left)", r.StatusCode, out, left)
	}

	// The metadata's per-request cap, on a key without a budget (its
	// remaining is null, so the budget rule stays out of it).
	c := h.admin("/key/generate", `{"metadata": {"max_request_usd": 0.00001}}`)["key"].(string)
	r, out = h.post("/v1/chat/completions", body(50), "Authorization", "Bearer "+c)
	if r.StatusCode != 403 || principalErrCode(out) != "request_cap" || !strings.Contains(string(out), "estimated 5e-05 USD, cap 1e-05 USD" /* sprintf writes small numbers as Go does */) {
		t.Fatalf("capped key: %d %s", r.StatusCode, out)
	}
	if r, out := h.post("/v1/chat/completions", body(5), "Authorization", "Bearer "+c); r.StatusCode != 200 {
		t.Fatalf("capped key, small request: %d %s", r.StatusCode, out)
	}
	// The master key has no budget, no metadata.
	if r, out := h.post("/v1/chat/completions", body(100000), "Authorization", "Bearer "+master); r.StatusCode != 200 {
		t.Fatalf("master key: %d %s", r.StatusCode, out)
	}

	// The allowed requests carry the department the policy read.
	if err := h.writer.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{a: "dept:finance", b: "dept:finance", c: "dept:none"} {
		recs, err := h.st.ListSpend(context.Background(), store.SpendFilter{KeyHash: keys.Hash(key)})
		if err != nil || len(recs) == 0 {
			t.Fatalf("spend records: %v %d", err, len(recs))
		}
		if !slices.ContainsFunc(recs, func(r store.SpendRecord) bool { return slices.Contains(r.Tags, want) }) {
			t.Errorf("key %s…: no record tagged %s: %+v", key[:8], want, recs)
		}
	}
}

func principalErrCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}
