package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

const issueConfig = `
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude-3-5-sonnet
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: fast-fallback
    litellm_params:
      model: mistral/mistral-small-latest
      api_key: os.environ/MISTRAL_API_KEY
router_settings:
  routing_strategy: least-busy
  fallbacks:
    - gpt-4o: [claude-3-5-sonnet, fast-fallback]
`

func TestIssueConfigLoadsUnchanged(t *testing.T) {
	c, err := Parse([]byte(issueConfig), "litellm_config.yaml", env(map[string]string{
		"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "MISTRAL_API_KEY": "m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("unexpected warnings: %v", c.Warnings)
	}
	if len(c.Models) != 3 {
		t.Fatalf("models: %d", len(c.Models))
	}
	m := c.Models[1]
	if m.ModelName != "claude-3-5-sonnet" || m.Provider != "anthropic" || m.UpstreamModel != "claude-3-5-sonnet-20241022" || m.APIKey != "sk-a" {
		t.Fatalf("model 1: %+v", m)
	}
	if c.Router.RoutingStrategy != "least-busy" {
		t.Fatalf("strategy %q", c.Router.RoutingStrategy)
	}
	if got := c.Router.Fallbacks["gpt-4o"]; len(got) != 2 || got[0] != "claude-3-5-sonnet" || got[1] != "fast-fallback" {
		t.Fatalf("fallbacks %v", c.Router.Fallbacks)
	}
}

func TestFullLiteLLMConfig(t *testing.T) {
	src := `
environment_variables:
  AZ_KEY: from-env-vars
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/AZ_KEY
      api_base: https://example.test/v1
      rpm: 100
      tpm: "20000"
      timeout: 30
      stream_timeout: 2m
      weight: 2
      tags: [eu, fast]
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001
      extra_headers: {X-Team: a}
      vertex_project: p1
    model_info:
      id: dep-1
      mode: chat
      max_input_tokens: 128000
      supports_vision: true
  - model_name: bare
    litellm_params:
      model: gpt-4o-mini
litellm_settings:
  drop_params: true
  num_retries: 3
  request_timeout: 600
  success_callback: ["langfuse"]
  context_window_fallbacks: [{gpt-4o: [bare]}]
router_settings:
  num_retries: 2
  allowed_fails: 3
  cooldown_time: 30
  redis_host: localhost
general_settings:
  master_key: sk-1234
  database_url: postgresql://u:p@h/db
portcullis:
  server:
    max_body_bytes: 1048576
    read_timeout: 10s
    reduce_memory: true
    lean_streams_after: 0
  log:
    format: json
    level: warn
some_unknown_top_key: 1
`
	c, err := Parse([]byte(src), "full", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Models[0]
	if m.APIKey != "from-env-vars" || m.RPM != 100 || m.TPM != 20000 || m.Timeout != 30*time.Second ||
		m.StreamTimeout != 2*time.Minute || m.Weight != 2 || len(m.Tags) != 2 || m.ID != "dep-1" ||
		m.InputCostPerToken != 0.0000025 || m.Headers["X-Team"] != "a" || m.Params["vertex_project"] != "p1" ||
		m.Info.MaxInputTokens != 128000 {
		t.Fatalf("model: %+v", m)
	}
	if c.Models[1].Provider != "openai" || c.Models[1].UpstreamModel != "gpt-4o-mini" {
		t.Fatalf("bare model name: %+v", c.Models[1])
	}
	if c.Router.NumRetries != 2 || c.Router.AllowedFails != 3 || c.Router.CooldownTime != 30*time.Second {
		t.Fatalf("router: %+v", c.Router)
	}
	if c.Router.ContextWindowFallbacks["gpt-4o"][0] != "bare" {
		t.Fatalf("cw fallbacks: %+v", c.Router.ContextWindowFallbacks)
	}
	if c.General.MasterKey != "sk-1234" || c.General.DatabaseURL == "" || !c.LiteLLM.DropParams || c.LiteLLM.RequestTimeout != 600*time.Second {
		t.Fatalf("settings: %+v %+v", c.General, c.LiteLLM)
	}
	if c.Server.MaxBodyBytes != 1<<20 || c.Server.ReadTimeout != 10*time.Second || !c.Server.ReduceMemory || c.Server.LeanStreamsAfter != 0 || c.Log.Format != "json" {
		t.Fatalf("portcullis: %+v %+v", c.Server, c.Log)
	}
	warns := strings.Join(probs(c.Warnings), "\n")
	for _, want := range []string{"some_unknown_top_key: unknown key", "litellm_settings.success_callback: accepted but not used"} {
		if !strings.Contains(warns, want) {
			t.Fatalf("warnings missing %q:\n%s", want, warns)
		}
	}
	if strings.Contains(warns, "redis_host: unknown") {
		t.Fatalf("a LiteLLM key was called unknown:\n%s", warns)
	}
}

func probs(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func TestInvalidConfigsSayWhereAndWhy(t *testing.T) {
	cases := []struct{ src, want string }{
		{"model_list: [", "yaml"},
		{"model_list:\n  - litellm_params: {model: openai/x}\n", "model_list[0].model_name: required"},
		{"model_list:\n  - model_name: a\n    litellm_params: {}\n", "model_list[0].litellm_params.model: required"},
		{"model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, rpm: lots}\n", `model_list[0].litellm_params.rpm: want a number, got "lots"`},
		{"model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, timeout: -1}\n", "model_list[0].litellm_params.timeout: must not be negative"},
		{"model_list: 5\n", "model_list: want a list"},
		{"router_settings:\n  routing_strategy: fastest\n", `router_settings.routing_strategy: unknown strategy "fastest"`},
		{"router_settings:\n  fallbacks: [gpt-4o]\n", "router_settings.fallbacks[0]: want a mapping"},
		{"portcullis:\n  log: {format: xml}\n", "portcullis.log.format"},
		{"portcullis:\n  server: {tls_cert_file: a.pem}\n", "tls_cert_file and tls_key_file go together"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.src), "bad.yaml", env(nil))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want it to contain %q", c.src, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), "bad.yaml") {
			t.Errorf("error does not name the file: %v", err)
		}
	}
}

func TestUnsetEnvironmentVariableWarns(t *testing.T) {
	c, err := Parse([]byte(issueConfig), "x", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 3 || !strings.Contains(c.Warnings[0].Msg, "OPENAI_API_KEY is not set") {
		t.Fatalf("warnings: %v", c.Warnings)
	}
}

func TestDefaultConfig(t *testing.T) {
	c := Default()
	if len(c.Models) == 0 || c.Models[0].Provider != "mock" {
		t.Fatalf("default: %+v", c.Models)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("default config warns: %v", c.Warnings)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(issueConfig))
	f.Add([]byte("model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, rpm: 3}\n"))
	f.Add([]byte("router_settings: {fallbacks: [{a: [b]}]}"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse(src, "fuzz", env(nil))
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !IsConfigError(err) {
			t.Fatalf("untyped error %T: %v", err, err)
		}
	})
}

func TestMasterKeyFromEnvironment(t *testing.T) {
	c, err := Parse([]byte("model_list: []\n"), "x", env(map[string]string{"LITELLM_MASTER_KEY": "sk-lite"}))
	if err != nil || c.General.MasterKey != "sk-lite" {
		t.Fatalf("LITELLM_MASTER_KEY: %v %q", err, c.General.MasterKey)
	}
	c, _ = Parse([]byte("model_list: []\n"), "x", env(map[string]string{"LITELLM_MASTER_KEY": "sk-lite", "PORTCULLIS_MASTER_KEY": "sk-p"}))
	if c.General.MasterKey != "sk-p" {
		t.Fatalf("PORTCULLIS_MASTER_KEY should win: %q", c.General.MasterKey)
	}
	c, _ = Parse([]byte("general_settings: {master_key: sk-file}\n"), "x", env(map[string]string{"PORTCULLIS_MASTER_KEY": "sk-p"}))
	if c.General.MasterKey != "sk-file" {
		t.Fatalf("the file should win: %q", c.General.MasterKey)
	}
}

func TestLeanStreamsAfterDefault(t *testing.T) {
	c, err := Parse([]byte("model_list: []\n"), "t", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.LeanStreamsAfter != DefaultLeanStreamsAfter {
		t.Fatalf("lean_streams_after %d without the key, want %d", c.Server.LeanStreamsAfter, DefaultLeanStreamsAfter)
	}
	if _, err := Parse([]byte("portcullis:\n  server:\n    lean_streams_after: -1\n"), "t", env(nil)); err == nil {
		t.Fatal("a negative lean_streams_after was accepted")
	}
}
