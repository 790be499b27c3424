//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// guardedConfig serves two models with the shipped Rego policies (and the
// test's data), the response cache and a master key for virtual keys.
func guardedConfig(policyDir, root string) string {
	return `model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: os.environ/OPENAI_API_KEY
  # The fake upstream streams this model's reply in 4-byte pieces, so an
  # address in it always spans events.
  - model_name: chatty
    litellm_params:
      model: openai/gpt-4o-split-4
      api_key: os.environ/OPENAI_API_KEY
litellm_settings:
  cache: true
  cache_params:
    type: local
    ttl: 600
general_settings:
  master_key: ` + masterKey + `
portcullis:
  policy:
    dir: ` + policyDir + `
  plugins:
    # Requests for "auto" are routed by prompt length (the Rust router;
    # plugins/ tests show the Go one decides the same).
    - name: router
      module: ` + filepath.Join(root, "plugins", "router-rust", "router-rust.wasm") + `
      apply: {models: [auto]}
      failure_policy: fail_closed
      config:
        rules:
          - {max_prompt_chars: 200, model: gpt-4o-mini}
          - {min_prompt_chars: 201, model: gpt-4o}
    # Answers of "chatty" are redacted as they stream (the prompt is not:
    # only the response hooks run).
    - name: pii-redact
      module: ` + filepath.Join(root, "plugins", "pii-redact", "pii-redact.wasm") + `
      hooks: [on_response, on_stream_event, on_stream_end]
      apply: {models: [chatty]}
`
}

// guardData is data.portcullis for the end-to-end policies: interns may
// use gpt-4o-mini only, with max_tokens capped at 64; card numbers are
// denied and e-mail addresses redacted for everyone; the "broken" team's
// time zone makes its evaluation fail (the request must fail closed).
const guardData = `{"portcullis": {
  "access": {"teams": {
    "interns": {"models": ["gpt-4o-mini*"]},
    "broken": {"models": ["*"], "hours": {"tz": "Not/AZone", "from": 0, "to": 24}}}},
  "content": {"teams": {"interns": {"max_tokens": 64}}},
  "pii": {"actions": {"card": "deny", "email": "redact"}}
}}`

// policyDirFor copies the shipped policies (with their tests, which run on
// load) and writes the test's data beside them.
func policyDirFor(t *testing.T, root, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "policies")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "policies", "gateway")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".rego") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, out, e.Name(), string(b))
	}
	writeFile(t, out, "data.json", guardData)
	return out
}
