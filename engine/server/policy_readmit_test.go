package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/policy"
)

// readmitConfig has a cheap and a dear model (output at 1 and 100 µ$ per
// token).
const readmitConfig = `
model_list:
  - model_name: cheap
    litellm_params:
      model: mock/cheap
      output_cost_per_token: 0.000001
  - model_name: dear
    litellm_params:
      model: mock/dear
      output_cost_per_token: 0.0001
general_settings:
  master_key: your-master-key
`

// overridePolicy routes requests whose metadata asks for it to another
// model group.
const overridePolicy = `package gateway

import rego.v1

decision := {"allow": true, "mutations": {"model": input.request.headers["x-route-to"]}} if input.request.headers["x-route-to"]
else := {"allow": true}
`

// A policy's model override is admitted again by the key stage: a model
// outside the key's list is refused, and the budget reservation follows
// the dearer model (refused when it does not fit), while a request the
// override makes cheaper goes through.
func TestModelOverrideIsReadmittedByTheKeyStage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gateway.rego"), []byte(overridePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(config.PolicySettings{Dir: dir, Timeout: 5 * time.Second}, policy.Options{Headers: []string{"x-route-to"}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	h := newStackOpts(t, readmitConfig, func(o *gateway.Options) { o.Policy = eng.Middleware() })
	body := `{"model":"cheap","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`

	// Allowed only the cheap model: the override to dear is refused.
	onlyCheap := h.admin("/key/generate", `{"models": ["cheap"]}`)["key"].(string)
	if r, out := h.post("/v1/chat/completions", body, "Authorization", "Bearer "+onlyCheap); r.StatusCode != 200 {
		t.Fatalf("no override: %d %s", r.StatusCode, out)
	}
	r, out := h.post("/v1/chat/completions", body, "Authorization", "Bearer "+onlyCheap, "x-route-to", "dear")
	if r.StatusCode != 403 || principalErrCode(out) != "model_not_allowed" {
		t.Fatalf("override to a model the key may not use: %d %s", r.StatusCode, out)
	}

	// A budget of 0.005 USD: 100 tokens of cheap (0.0001) fit, of dear
	// (0.01) do not; the refusal leaves nothing reserved.
	small := h.admin("/key/generate", `{"max_budget": 0.005}`)["key"].(string)
	r, out = h.post("/v1/chat/completions", body, "Authorization", "Bearer "+small, "x-route-to", "dear")
	if r.StatusCode != 400 || principalErrCode(out) != "400" && principalErrCode(out) != "budget_exceeded" {
		t.Fatalf("override to a model over the budget: %d %s", r.StatusCode, out)
	}
	acct, ok := h.km.KeyAccount(keys.Hash(small))
	if !ok || acct.Reserved() != 0 || acct.Spent() != 0 {
		t.Fatalf("after the refusal: reserved %d spent %d", acct.Reserved(), acct.Spent())
	}
	// The other way: asked for dear (over the budget at admission? no:
	// 50 tokens of dear cost 0.005, which fits), routed to cheap: served,
	// and charged at cheap's price.
	body = `{"model":"dear","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`
	if r, out := h.post("/v1/chat/completions", body, "Authorization", "Bearer "+small, "x-route-to", "cheap"); r.StatusCode != 200 {
		t.Fatalf("override to a cheaper model: %d %s", r.StatusCode, out)
	}
	if acct.Reserved() != 0 || acct.Spent() <= 0 || acct.Spent() > 50_000 {
		t.Fatalf("after the cheap request: reserved %d spent %d (want the cheap price)", acct.Reserved(), acct.Spent())
	}
}
