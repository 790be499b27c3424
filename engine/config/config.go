// Package config reads a LiteLLM proxy config file unchanged, plus
// Portcullis's own settings under the top-level "portcullis" key, into typed
// structs, and reports every problem with the place it occurred.
//
// Reading is separate from building: Load returns a *Config (typed, with
// secrets resolved from os.environ/ references), and engine/gateway compiles
// it into an immutable runtime snapshot. `portcullis validate` does both
// without serving.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
)

// Config is a whole configuration file.
type Config struct {
	Models  []Model
	Router  RouterSettings
	LiteLLM LiteLLMSettings
	General GeneralSettings
	Server  ServerSettings
	Log     LogSettings
	Storage StorageSettings
	Spend   SpendSettings
	Auth    AuthSettings
	Policy  PolicySettings
	Wasm    WasmSettings
	Plugins []PluginSettings
	Cache   CacheSettings
	// Warnings are non-fatal findings (unknown keys, unset variables).
	Warnings []Problem
	// Source is the file path, or "embedded".
	Source string
}

// Model is one model_list entry: one deployment of a public model name.
type Model struct {
	Path      string // "model_list[3]", for messages
	ModelName string
	// Provider and UpstreamModel split litellm_params.model at the first "/".
	Provider      string
	UpstreamModel string
	APIKey        string
	APIBase       string
	APIVersion    string
	Organization  string
	RPM           int
	TPM           int
	MaxParallel   int
	Weight        float64
	Order         int
	Timeout       time.Duration
	StreamTimeout time.Duration
	MaxRetries    int
	Tags          []string
	Region        string
	Headers       map[string]string
	// Cost per token in USD (litellm_params or model_info), LiteLLM's
	// names; 0 means "use the price table".
	InputCostPerToken  float64
	OutputCostPerToken float64
	CacheReadCost      float64 // cache_read_input_token_cost
	CacheWriteCost     float64 // cache_creation_input_token_cost
	ReasoningCost      float64 // output_cost_per_reasoning_token
	// ID is model_info.id, or derived from the entry when absent.
	ID   string
	Info ModelInfo
	// Params holds every litellm_params key, resolved, for the provider.
	Params map[string]any
}

// ModelInfo is the subset of model_info Portcullis reads.
type ModelInfo struct {
	ID              string
	Mode            string
	BaseModel       string
	MaxInputTokens  int
	MaxOutputTokens int
}

// RouterSettings is router_settings (and the routing keys LiteLLM also
// accepts under litellm_settings).
type RouterSettings struct {
	RoutingStrategy        string
	NumRetries             int
	Timeout                time.Duration
	StreamTimeout          time.Duration
	AllowedFails           int
	CooldownTime           time.Duration
	Fallbacks              map[string][]string
	DefaultFallbacks       []string
	ContextWindowFallbacks map[string][]string
	ContentPolicyFallbacks map[string][]string
	MaxFallbacks           int
	// RetryPolicy and AllowedFailsPolicy use LiteLLM's keys
	// ("RateLimitErrorRetries", "TimeoutErrorAllowedFails").
	RetryPolicy        map[string]int
	AllowedFailsPolicy map[string]int
	// LatencyBuffer is routing_strategy_args.lowest_latency_buffer.
	LatencyBuffer float64
	// Portcullis's own router settings (portcullis.router).
	BackoffBase       time.Duration
	BackoffMax        time.Duration
	RetryAfterMax     time.Duration
	StreamIdleTimeout time.Duration
	MaxStreamDuration time.Duration
	// Errors overrides the action per error class (portcullis.router.errors).
	Errors map[string]ErrorAction
}

// ErrorAction overrides what the router does for one error class; nil
// fields keep the default.
type ErrorAction struct {
	Retries      *int
	Fallback     *bool
	AllowedFails *int
}

// ErrorClasses are the keys of portcullis.router.errors.
var ErrorClasses = []string{"bad_request", "auth", "not_found", "timeout", "rate_limit", "quota",
	"content_policy", "context_window", "server", "connection"}

// LiteLLMSettings is the part of litellm_settings Portcullis reads.
type LiteLLMSettings struct {
	// Cache is litellm_settings.cache / cache_params, folded into
	// Config.Cache (portcullis.cache wins).
	Cache          CacheSettings
	DropParams     bool
	RequestTimeout time.Duration
	JSONLogs       bool
}

// GeneralSettings is general_settings.
type GeneralSettings struct {
	MasterKey    string
	DatabaseURL  string
	StorePrompts bool // store_prompts_in_spend_logs
}

// ServerSettings is portcullis.server.
type ServerSettings struct {
	MaxBodyBytes    int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	IdleTimeout     time.Duration
	ShutdownTimeout time.Duration
	TLSCertFile     string
	TLSKeyFile      string
	MaxConns        int
	// ReduceMemory returns a connection's read buffer (8 KiB) to the pool
	// once a request is read and its write buffer once a response is
	// written: idle keep-alive connections hold no buffers and an open
	// stream holds 8 KiB less, at one more read syscall per request (about
	// 6% more gateway CPU per request at 1,000 req/s, 10% at full load,
	// measured by bench/). For gateways holding many idle connections or
	// long streams.
	ReduceMemory bool
	// LeanStreamsAfter is the number of open streams past which a new
	// stream is relayed on its hijacked connection (engine/server
	// relay.go: about 20 KiB less per open stream, a few tens of µs more
	// to its first byte on this 2-core machine); below it streams stay in
	// the connection's loop. 0: every stream. The config's default is
	// DefaultLeanStreamsAfter.
	LeanStreamsAfter int
}

// DefaultLeanStreamsAfter is portcullis.server.lean_streams_after's default.
const DefaultLeanStreamsAfter = 256

// StorageSettings is portcullis.storage (and general_settings.database_url).
type StorageSettings struct {
	// Path is the SQLite file (default "portcullis.db"); "" with
	// Disabled keeps nothing.
	Path     string
	Disabled bool
}

// SpendSettings is portcullis.spend.
type SpendSettings struct {
	FlushInterval time.Duration // default 100ms
	Strict        bool          // commit before the response's last byte
	// StorePrompts keeps each request's body and (non-streamed) response
	// in its spend record (LiteLLM's store_prompts_in_spend_logs).
	StorePrompts bool
}

// AuthSettings is portcullis.auth.
type AuthSettings struct {
	// AllowAnonymous serves LLM requests that carry no key even when a
	// master key is set (the development default of `make run`); a key
	// that is sent is always checked.
	AllowAnonymous bool
	// KeyCacheSize bounds the hot key metadata cache (default 100,000).
	KeyCacheSize int
}

// PolicySettings is portcullis.policy: OPA Rego policies in the request
// path (engine/policy). Empty Dir and Bundle: no policy stage.
type PolicySettings struct {
	// Dir holds *.rego modules, their *_test.rego tests and data files
	// (data.json / data.yaml), loaded recursively.
	Dir string
	// Bundle is an OPA bundle (.tar.gz) used instead of Dir.
	Bundle string
	// Query is the decision's entry point (default data.gateway.decision).
	Query string
	// ResponseQuery is the response-phase decision (default
	// data.gateway.response_decision; skipped when the policies leave it
	// undefined).
	ResponseQuery string
	// FailOpen lets a request through when evaluation errors, times out
	// or returns no decision (default: fail closed).
	FailOpen bool
	// Timeout bounds one evaluation (default 50ms).
	Timeout time.Duration
	// MaxTextBytes caps the message text put into the input (default
	// 64 KiB; the rest is cut and input.llm.truncated is true).
	MaxTextBytes int
	// StreamWindow is how many bytes of streamed output the response
	// decision sees at a time (default 1 KiB).
	StreamWindow int
	// Watch reloads when a file under Dir (or the bundle) changes
	// (default true); WatchInterval is how often it looks (default 1s).
	Watch         bool
	WatchInterval time.Duration
	// SkipTests loads policies whose own tests fail (default: a policy
	// whose tests fail never replaces the running one).
	SkipTests bool
	// Evaluator: "planned" (default: OPA's planner compiles each query
	// once per revision and engine/policy runs the plan) or "opa" (OPA's
	// own evaluator, topdown, for every decision; slower).
	Evaluator string
}

// WasmSettings is portcullis.wasm: process-wide Wasm host settings.
type WasmSettings struct {
	// CacheDir is the file-backed compilation cache (default: the user
	// cache dir's portcullis/wasm; "off" disables it).
	CacheDir string
}

// PluginSettings is one entry of portcullis.plugins, run in list order.
type PluginSettings struct {
	Path_ string // "portcullis.plugins[0]", for messages
	Name  string
	// Module is the .wasm file.
	Module string
	// Hooks limits which of the module's hooks run (default: all it
	// exports): on_request, on_response, on_stream_event, on_stream_end.
	Hooks []string
	// Config is handed to the plugin's on_config as JSON.
	Config []byte
	// MemoryLimitPages caps each instance's memory in 64 KiB pages
	// (default 256, 16 MiB).
	MemoryLimitPages int
	// Timeout is the per-hook deadline (default 50ms: a wall-clock bound, so it must absorb scheduling delays on a busy machine).
	Timeout time.Duration
	// PoolSize bounds the idle instances kept (default 2 x GOMAXPROCS).
	PoolSize int
	// FailurePolicy: "fail_closed" (default) or "fail_open".
	FailurePolicy string
	// Trusted runs without the per-hook deadline's loop checks (faster;
	// for plugins you build yourself).
	Trusted bool
	// Apply restricts the plugin to some requests; empty lists match all.
	Routes []string // endpoint paths, e.g. /v1/chat/completions
	Models []string // requested model names
	Teams  []string
	Keys   []string // key aliases or hashes
}

// CacheSettings is the response cache: LiteLLM's litellm_settings.cache
// and cache_params, and portcullis.cache.
type CacheSettings struct {
	Enabled bool
	// TTL of an entry (default 10m); MaxBytes the memory bound (default
	// 256 MiB).
	TTL      time.Duration
	MaxBytes int64
	// Scope: "team" (default), "key" or "global".
	Scope string
	// AllRequests caches non-deterministic requests too (default: only
	// temperature 0 or a seed).
	AllRequests bool
	// DefaultOff: only requests that ask for caching are cached
	// (LiteLLM's cache_params.mode: default_off).
	DefaultOff bool
	// CallTypes limits what is cached: chat, completions, embeddings,
	// messages (default all).
	CallTypes []string
	// Namespace prefixes every key (cache_params.namespace).
	Namespace string
}

// LogSettings is portcullis.log.
type LogSettings struct {
	Format string // "json" or "console"
	Level  string
}

// Routing strategies LiteLLM names.
var routingStrategies = map[string]bool{
	"simple-shuffle": true, "least-busy": true, "latency-based-routing": true,
	"usage-based-routing": true, "usage-based-routing-v2": true, "cost-based-routing": true,
}

// Error is returned by Load when a config is invalid; it lists every problem.
type Error struct {
	Source   string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid config %s:", e.Source)
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// LoadFile reads and checks a config file.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path, osGetenv)
}

// Parse reads and checks config bytes. getenv resolves os.environ/
// references and is also consulted for environment_variables overrides.
func Parse(data []byte, source string, getenv func(string) string) (*Config, error) {
	var root any
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{Source: source, Problems: []Problem{{"yaml", yaml.FormatError(err, false, true)}}}
	}
	if getenv == nil {
		getenv = osGetenv
	}
	r := &reader{getenv: getenv}
	top := r.obj("", root)
	// environment_variables (LiteLLM) set values for os.environ/ lookups.
	if top.has("environment_variables") {
		vars := top.strMap("environment_variables")
		outer := getenv
		r.getenv = func(k string) string {
			if v, ok := vars[k]; ok {
				return v
			}
			return outer(k)
		}
	}
	c := &Config{Source: source}
	c.General = readGeneral(top.child("general_settings"))
	c.LiteLLM = readLiteLLM(top.child("litellm_settings"), &c.Router)
	readRouter(top.child("router_settings"), &c.Router)
	for i, e := range top.list("model_list") {
		c.Models = append(c.Models, readModel(r.obj(fmt.Sprintf("model_list[%d]", i), e)))
	}
	readPortcullis(top.child("portcullis"), c)
	top.unknown(map[string]string{
		"include":           "include files are not supported yet",
		"guardrails":        "LiteLLM guardrails are replaced by Rego policies (policies/)",
		"mcp_servers":       "",
		"credential_list":   "",
		"search_tools":      "",
		"callback_settings": "",
	})
	checkModels(r, c)
	c.Warnings = r.warns
	if len(r.errs) > 0 {
		return nil, &Error{Source: source, Problems: r.errs}
	}
	return c, nil
}

func readGeneral(o *obj) GeneralSettings {
	g := GeneralSettings{MasterKey: o.str("master_key"), DatabaseURL: o.str("database_url"),
		StorePrompts: o.boolean("store_prompts_in_spend_logs")}
	if g.MasterKey == "" {
		// LiteLLM reads LITELLM_MASTER_KEY; ours takes precedence.
		g.MasterKey = o.r.getenv("PORTCULLIS_MASTER_KEY")
		if g.MasterKey == "" {
			g.MasterKey = o.r.getenv("LITELLM_MASTER_KEY")
		}
	}
	o.unknown(map[string]string{
		"alerting": "", "alerting_threshold": "", "proxy_batch_write_at": "", "database_connection_pool_limit": "",
		"database_connection_timeout": "", "disable_spend_logs": "", "store_model_in_db": "", "allow_requests_on_db_unavailable": "",
		"background_health_checks": "", "health_check_interval": "", "disable_master_key_return": "", "maximum_spend_logs_retention_period": "",
		"ui_access_mode": "", "allowed_routes": "", "admin_only_routes": "", "public_routes": "", "enforce_user_param": "",
		"custom_auth": "custom auth is done with Rego policies", "user_header_name": "", "max_request_size_mb": "", "max_response_size_mb": "",
		"pass_through_endpoints": "pass-through endpoints are not served", "infer_model_from_keys": "", "disable_reset_budget": "",
	})
	return g
}

func readLiteLLM(o *obj, rs *RouterSettings) LiteLLMSettings {
	s := LiteLLMSettings{
		DropParams:     o.boolean("drop_params"),
		RequestTimeout: o.duration("request_timeout"),
		JSONLogs:       o.boolean("json_logs"),
	}
	// LiteLLM also accepts these routing keys here; router_settings wins.
	if o.has("num_retries") {
		rs.NumRetries = o.integer("num_retries")
	}
	if o.has("fallbacks") {
		rs.Fallbacks = readFallbacks(o, "fallbacks")
	}
	if o.has("context_window_fallbacks") {
		rs.ContextWindowFallbacks = readFallbacks(o, "context_window_fallbacks")
	}
	if o.has("content_policy_fallbacks") {
		rs.ContentPolicyFallbacks = readFallbacks(o, "content_policy_fallbacks")
	}
	if o.has("default_fallbacks") {
		rs.DefaultFallbacks = o.strs("default_fallbacks")
	}
	if o.has("allowed_fails") {
		rs.AllowedFails = o.integer("allowed_fails")
	}
	if o.has("cooldown_time") {
		rs.CooldownTime = o.duration("cooldown_time")
	}
	s.Cache = readLiteLLMCache(o)
	o.unknown(map[string]string{
		"set_verbose": "", "callbacks": "use Portcullis logging and /metrics", "success_callback": "", "failure_callback": "",
		"service_callback": "", "cache": "", "cache_params": "",
		"max_budget": "", "budget_duration": "", "default_team_settings": "", "default_key_generate_params": "",
		"upperbound_key_generate_params": "", "max_internal_user_budget": "", "internal_user_budget_duration": "",
		"turn_off_message_logging": "", "redact_user_api_key_info": "", "telemetry": "", "modify_params": "",
		"enable_preview_features": "", "ssl_verify": "", "force_ipv4": "", "model_group_alias": "", "public_model_groups": "",
		"disable_end_user_cost_tracking": "", "key_generation_settings": "", "default_internal_user_params": "",
		"enable_json_schema_validation": "", "json_logs": "",
	})
	return s
}

func readFallbacks(o *obj, k string) map[string][]string {
	out := map[string][]string{}
	for i, e := range o.list(k) {
		p := fmt.Sprintf("%s[%d]", join(o.path, k), i)
		m, ok := e.(map[string]any)
		if !ok {
			o.r.errf(p, "want a mapping like {model: [fallback, ...]}, got %s", kind(e))
			continue
		}
		f := o.r.obj(p, m)
		for name := range m {
			out[name] = append(out[name], f.strs(name)...)
		}
	}
	return out
}

func readRouter(o *obj, rs *RouterSettings) {
	if o.has("routing_strategy") {
		rs.RoutingStrategy = o.str("routing_strategy")
		if !routingStrategies[rs.RoutingStrategy] {
			o.r.errf(join(o.path, "routing_strategy"), "unknown strategy %q (want simple-shuffle, least-busy, latency-based-routing, usage-based-routing-v2 or cost-based-routing)", rs.RoutingStrategy)
		}
	}
	if o.has("num_retries") {
		rs.NumRetries = o.integer("num_retries")
	}
	if o.has("timeout") {
		rs.Timeout = o.duration("timeout")
	}
	if o.has("stream_timeout") {
		rs.StreamTimeout = o.duration("stream_timeout")
	}
	if o.has("allowed_fails") {
		rs.AllowedFails = o.integer("allowed_fails")
	}
	if o.has("cooldown_time") {
		rs.CooldownTime = o.duration("cooldown_time")
	}
	if o.has("fallbacks") {
		rs.Fallbacks = readFallbacks(o, "fallbacks")
	}
	if o.has("context_window_fallbacks") {
		rs.ContextWindowFallbacks = readFallbacks(o, "context_window_fallbacks")
	}
	if o.has("content_policy_fallbacks") {
		rs.ContentPolicyFallbacks = readFallbacks(o, "content_policy_fallbacks")
	}
	if o.has("default_fallbacks") {
		rs.DefaultFallbacks = o.strs("default_fallbacks")
	}
	if o.has("max_fallbacks") {
		rs.MaxFallbacks = o.integer("max_fallbacks")
	}
	rs.RetryPolicy = readPolicy(o.child("retry_policy"), "Retries")
	rs.AllowedFailsPolicy = readPolicy(o.child("allowed_fails_policy"), "AllowedFails")
	args := o.child("routing_strategy_args")
	if args.has("lowest_latency_buffer") {
		rs.LatencyBuffer, _ = args.num("lowest_latency_buffer")
	}
	args.unknown(map[string]string{"ttl": "latency averages are exponential, not windowed"})
	// Tags filter deployments whenever a request carries them.
	o.boolean("enable_tag_filtering")
	o.unknown(map[string]string{
		"retry_after":            "Portcullis honours the upstream's Retry-After; see portcullis.router.backoff_base",
		"enable_pre_call_checks": "", "redis_host": "", "redis_port": "", "redis_password": "",
		"redis_url": "", "model_group_alias": "", "tag_filtering_match_any": "", "cache_responses": "",
		"provider_budget_config": "", "model_group_retry_policy": "", "disable_cooldowns": "",
		"optional_pre_call_checks": "", "default_max_parallel_requests": "",
	})
}

// paramKeys are the litellm_params keys Portcullis reads itself.
var paramKeys = map[string]bool{
	"model": true, "api_key": true, "api_base": true, "base_url": true, "api_version": true, "organization": true,
	"rpm": true, "tpm": true, "max_parallel_requests": true, "weight": true, "order": true, "timeout": true,
	"stream_timeout": true, "max_retries": true, "tags": true, "region_name": true, "extra_headers": true,
	"input_cost_per_token": true, "output_cost_per_token": true, "cache_read_input_token_cost": true,
	"cache_creation_input_token_cost": true, "output_cost_per_reasoning_token": true,
}

func readModel(o *obj) Model {
	m := Model{Path: o.path, ModelName: o.str("model_name")}
	if m.ModelName == "" {
		o.r.errf(join(o.path, "model_name"), "required")
	}
	p := o.child("litellm_params")
	full := p.str("model")
	switch {
	case full == "":
		o.r.errf(join(p.path, "model"), "required (e.g. openai/gpt-4o)")
	case !strings.Contains(full, "/"):
		// LiteLLM infers the provider of bare OpenAI model names.
		m.Provider, m.UpstreamModel = "openai", full
	default:
		m.Provider, m.UpstreamModel, _ = strings.Cut(full, "/")
	}
	m.APIKey = p.str("api_key")
	m.APIBase = p.str("api_base")
	if b := p.str("base_url"); b != "" && m.APIBase == "" {
		m.APIBase = b
	}
	m.APIVersion = p.str("api_version")
	m.Organization = p.str("organization")
	m.RPM = p.integer("rpm")
	m.TPM = p.integer("tpm")
	m.MaxParallel = p.integer("max_parallel_requests")
	m.Weight, _ = p.num("weight")
	m.Order = p.integer("order")
	m.Timeout = p.duration("timeout")
	m.StreamTimeout = p.duration("stream_timeout")
	m.MaxRetries = p.integer("max_retries")
	m.Tags = p.strs("tags")
	m.Region = p.str("region_name")
	m.Headers = p.strMap("extra_headers")
	m.InputCostPerToken, _ = p.num("input_cost_per_token")
	m.OutputCostPerToken, _ = p.num("output_cost_per_token")
	m.CacheReadCost, _ = p.num("cache_read_input_token_cost")
	m.CacheWriteCost, _ = p.num("cache_creation_input_token_cost")
	m.ReasoningCost, _ = p.num("output_cost_per_reasoning_token")
	m.Params = map[string]any{}
	for k, v := range p.m {
		if !paramKeys[k] {
			if s, ok := v.(string); ok {
				v = p.env(join(p.path, k), s)
			}
			m.Params[k] = v
			p.used[k] = true
		}
	}
	info := o.child("model_info")
	m.Info = ModelInfo{
		ID:              info.str("id"),
		Mode:            info.str("mode"),
		BaseModel:       info.str("base_model"),
		MaxInputTokens:  info.integer("max_input_tokens"),
		MaxOutputTokens: info.integer("max_output_tokens"),
	}
	if info.has("input_cost_per_token") && m.InputCostPerToken == 0 {
		m.InputCostPerToken, _ = info.num("input_cost_per_token")
	}
	if info.has("output_cost_per_token") && m.OutputCostPerToken == 0 {
		m.OutputCostPerToken, _ = info.num("output_cost_per_token")
	}
	for _, f := range []struct {
		k string
		v *float64
	}{{"cache_read_input_token_cost", &m.CacheReadCost}, {"cache_creation_input_token_cost", &m.CacheWriteCost},
		{"output_cost_per_reasoning_token", &m.ReasoningCost}} {
		if info.has(f.k) && *f.v == 0 {
			*f.v, _ = info.num(f.k)
		}
	}
	// model_info is free-form metadata in LiteLLM: other keys are kept
	// silently.
	m.ID = m.Info.ID
	if m.Weight < 0 {
		o.r.errf(join(p.path, "weight"), "must not be negative")
	}
	o.unknown(nil)
	return m
}

// readPolicy reads LiteLLM's retry_policy / allowed_fails_policy: keys are
// an error name plus suffix ("RateLimitErrorRetries").
func readPolicy(o *obj, suffix string) map[string]int {
	if o.m == nil {
		return nil
	}
	known := map[string]bool{"BadRequestError": true, "AuthenticationError": true, "TimeoutError": true,
		"RateLimitError": true, "ContentPolicyViolationError": true, "InternalServerError": true}
	out := map[string]int{}
	for k := range o.m {
		name, ok := strings.CutSuffix(k, suffix)
		if !ok || !known[name] {
			o.r.errf(join(o.path, k), "unknown key (want one of BadRequestError, AuthenticationError, TimeoutError, RateLimitError, ContentPolicyViolationError, InternalServerError followed by %s)", suffix)
			o.used[k] = true
			continue
		}
		out[name] = o.integer(k)
	}
	return out
}

func readRouterExtra(o *obj, rs *RouterSettings) {
	rs.BackoffBase = o.duration("backoff_base")
	rs.BackoffMax = o.duration("backoff_max")
	rs.RetryAfterMax = o.duration("retry_after_max")
	rs.StreamIdleTimeout = o.duration("stream_idle_timeout")
	rs.MaxStreamDuration = o.duration("max_stream_duration")
	e := o.child("errors")
	if e.m != nil {
		rs.Errors = map[string]ErrorAction{}
		for _, cls := range ErrorClasses {
			if !e.has(cls) {
				continue
			}
			c := e.child(cls)
			var a ErrorAction
			if c.has("retries") {
				v := c.integer("retries")
				a.Retries = &v
			}
			if c.has("fallback") {
				v := c.boolean("fallback")
				a.Fallback = &v
			}
			if c.has("cooldown") && !c.boolean("cooldown") {
				v := -1
				a.AllowedFails = &v
			}
			if c.has("allowed_fails") {
				v := c.integer("allowed_fails")
				a.AllowedFails = &v
			}
			c.unknown(nil)
			rs.Errors[cls] = a
		}
		e.unknown(nil)
	}
	o.unknown(nil)
}

func readPortcullis(o *obj, c *Config) {
	readRouterExtra(o.child("router"), &c.Router)
	s := o.child("server")
	c.Server = ServerSettings{
		MaxBodyBytes:    s.integer("max_body_bytes"),
		ReadTimeout:     s.duration("read_timeout"),
		WriteTimeout:    s.duration("write_timeout"),
		IdleTimeout:     s.duration("idle_timeout"),
		ShutdownTimeout: s.duration("shutdown_timeout"),
		TLSCertFile:     s.str("tls_cert_file"),
		TLSKeyFile:      s.str("tls_key_file"),
		MaxConns:        s.integer("max_conns"),
		ReduceMemory:    s.boolean("reduce_memory"),
	}
	c.Server.LeanStreamsAfter = DefaultLeanStreamsAfter
	if _, ok := s.num("lean_streams_after"); ok {
		c.Server.LeanStreamsAfter = s.integer("lean_streams_after")
	}
	if (c.Server.TLSCertFile == "") != (c.Server.TLSKeyFile == "") {
		o.r.errf(s.path, "tls_cert_file and tls_key_file go together")
	}
	s.unknown(nil)
	st := o.child("storage")
	c.Storage = StorageSettings{Path: st.str("path"), Disabled: st.boolean("disabled")}
	st.unknown(nil)
	if c.Storage.Path == "" {
		switch u := c.General.DatabaseURL; {
		case strings.HasPrefix(u, "sqlite://"):
			c.Storage.Path = strings.TrimPrefix(u, "sqlite://")
		case strings.HasPrefix(u, "file:"):
			c.Storage.Path = strings.TrimPrefix(u, "file:")
		case u != "":
			o.r.warnf("general_settings.database_url", "only SQLite is supported so far; keys and spend go to the local SQLite file %q (set portcullis.storage.path)", "portcullis.db")
		}
	}
	if c.Storage.Path == "" {
		c.Storage.Path = "portcullis.db"
	}
	sp := o.child("spend")
	c.Spend = SpendSettings{FlushInterval: sp.duration("flush_interval"), Strict: sp.boolean("strict"),
		StorePrompts: sp.boolean("store_prompts") || c.General.StorePrompts}
	sp.unknown(nil)
	au := o.child("auth")
	c.Auth = AuthSettings{AllowAnonymous: au.boolean("allow_anonymous"), KeyCacheSize: au.integer("key_cache_size")}
	au.unknown(nil)
	c.Policy = readPolicySettings(o.child("policy"))
	w := o.child("wasm")
	c.Wasm = WasmSettings{CacheDir: w.str("cache_dir")}
	w.unknown(nil)
	c.Plugins = readPlugins(o)
	c.Cache = readCache(o.child("cache"), c.LiteLLM.Cache)
	l := o.child("log")
	c.Log = LogSettings{Format: l.str("format"), Level: l.str("level")}
	switch c.Log.Format {
	case "", "json", "console":
	default:
		l.r.errf(join(l.path, "format"), "want json or console, got %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		l.r.errf(join(l.path, "level"), "want debug, info, warn or error, got %q", c.Log.Level)
	}
	l.unknown(nil)
	if c.LiteLLM.JSONLogs && c.Log.Format == "" {
		c.Log.Format = "json"
	}
	o.unknown(nil)
}

// checkModels validates cross-references: fallbacks must name groups.
func checkModels(r *reader, c *Config) {
	groups := map[string]bool{}
	for _, m := range c.Models {
		groups[m.ModelName] = true
	}
	check := func(path string, fb map[string][]string) {
		for from, tos := range fb {
			if !groups[from] && from != "*" {
				r.warnf(path, "fallback source %q is not a model_name in model_list", from)
			}
			for _, to := range tos {
				if !groups[to] {
					r.warnf(path, "fallback target %q is not a model_name in model_list", to)
				}
			}
		}
	}
	check("router_settings.fallbacks", c.Router.Fallbacks)
	check("router_settings.context_window_fallbacks", c.Router.ContextWindowFallbacks)
	check("router_settings.content_policy_fallbacks", c.Router.ContentPolicyFallbacks)
}

// IsConfigError reports whether err is a config validation error.
func IsConfigError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// readLiteLLMCache reads litellm_settings.cache and cache_params.
func readLiteLLMCache(o *obj) CacheSettings {
	c := CacheSettings{Enabled: o.boolean("cache")}
	p := o.child("cache_params")
	switch t := p.str("type"); t {
	case "", "local", "in-memory":
	case "redis", "redis-semantic", "qdrant-semantic", "s3", "gcs", "disk", "azure-blob":
		if c.Enabled {
			p.r.warnf(join(p.path, "type"), "cache type %q is not supported yet; the in-memory cache is used", t)
		}
	default:
		p.r.errf(join(p.path, "type"), "unknown cache type %q", t)
	}
	c.TTL = p.duration("ttl")
	c.Namespace = p.str("namespace")
	if m := p.str("mode"); m == "default_off" {
		c.DefaultOff = true
	} else if m != "" && m != "default_on" {
		p.r.errf(join(p.path, "mode"), "want default_on or default_off, got %q", m)
	}
	for _, t := range p.strs("supported_call_types") {
		switch t {
		case "completion", "acompletion":
			c.CallTypes = append(c.CallTypes, "chat", "messages")
		case "text_completion", "atext_completion":
			c.CallTypes = append(c.CallTypes, "completions")
		case "embedding", "aembedding":
			c.CallTypes = append(c.CallTypes, "embeddings")
		default:
			p.r.warnf(join(p.path, "supported_call_types"), "call type %q is not cached by Portcullis", t)
		}
	}
	p.unknown(map[string]string{"host": "", "port": "", "password": "", "redis_startup_nodes": "",
		"service_name": "", "similarity_threshold": "", "default_in_memory_ttl": "", "default_in_redis_ttl": "",
		"max_connections": ""})
	return c
}

// readPolicy reads portcullis.policy.
func readPolicySettings(o *obj) PolicySettings {
	p := PolicySettings{
		Dir: o.str("dir"), Bundle: o.str("bundle"), Query: o.str("query"), ResponseQuery: o.str("response_query"),
		FailOpen: o.boolean("fail_open"), Timeout: o.duration("timeout"), MaxTextBytes: o.integer("max_text_bytes"),
		StreamWindow: o.integer("stream_window"), Watch: true, WatchInterval: o.duration("watch_interval"),
		SkipTests: o.boolean("skip_tests"), Evaluator: o.str("evaluator"),
	}
	switch p.Evaluator {
	case "", "planned", "opa":
	default:
		o.r.errf(join(o.path, "evaluator"), "want planned or opa, got %q", p.Evaluator)
	}
	if o.has("watch") {
		p.Watch = o.boolean("watch")
	}
	if p.Dir != "" && p.Bundle != "" {
		o.r.errf(o.path, "dir and bundle are alternatives; set one")
	}
	if p.Query == "" {
		p.Query = "data.gateway.decision"
	}
	if p.ResponseQuery == "" {
		p.ResponseQuery = "data.gateway.response_decision"
	}
	if p.Timeout == 0 {
		p.Timeout = 50 * time.Millisecond
	}
	if p.MaxTextBytes == 0 {
		p.MaxTextBytes = 64 << 10
	}
	if p.StreamWindow == 0 {
		p.StreamWindow = 1 << 10
	}
	if p.WatchInterval == 0 {
		p.WatchInterval = time.Second
	}
	o.unknown(nil)
	return p
}

// readPlugins reads portcullis.plugins.
func readPlugins(o *obj) []PluginSettings {
	var out []PluginSettings
	names := map[string]bool{}
	for i, e := range o.list("plugins") {
		path := fmt.Sprintf("%s[%d]", join(o.path, "plugins"), i)
		p := o.r.obj(path, e)
		ps := PluginSettings{
			Path_: path, Name: p.str("name"), Module: p.str("module"), Hooks: p.strs("hooks"),
			MemoryLimitPages: p.integer("memory_limit_pages"), Timeout: p.duration("timeout"),
			PoolSize: p.integer("pool_size"), FailurePolicy: p.str("failure_policy"), Trusted: p.boolean("trusted"),
		}
		if p.has("config") {
			b, err := json.Marshal(p.raw("config"))
			if err != nil {
				p.r.errf(join(path, "config"), "not representable as JSON: %v", err)
			}
			ps.Config = b
		}
		ap := p.child("apply")
		ps.Routes, ps.Models, ps.Teams, ps.Keys = ap.strs("routes"), ap.strs("models"), ap.strs("teams"), ap.strs("keys")
		ap.unknown(nil)
		if ps.Module == "" {
			p.r.errf(join(path, "module"), "required: the plugin's .wasm file")
		}
		if ps.Name == "" {
			ps.Name = strings.TrimSuffix(filepath.Base(ps.Module), ".wasm")
		}
		if names[ps.Name] {
			p.r.errf(join(path, "name"), "plugin name %q is used twice", ps.Name)
		}
		names[ps.Name] = true
		for _, h := range ps.Hooks {
			switch h {
			case "on_request", "on_response", "on_stream_event", "on_stream_end":
			default:
				p.r.errf(join(path, "hooks"), "unknown hook %q (on_request, on_response, on_stream_event, on_stream_end)", h)
			}
		}
		switch ps.FailurePolicy {
		case "":
			ps.FailurePolicy = "fail_closed"
		case "fail_closed", "fail_open":
		default:
			p.r.errf(join(path, "failure_policy"), "want fail_closed or fail_open, got %q", ps.FailurePolicy)
		}
		if ps.MemoryLimitPages == 0 {
			ps.MemoryLimitPages = 256
		} else if ps.MemoryLimitPages < 0 || ps.MemoryLimitPages > 65536 {
			p.r.errf(join(path, "memory_limit_pages"), "want 1..65536 pages of 64 KiB, got %d", ps.MemoryLimitPages)
		}
		if ps.Timeout == 0 {
			ps.Timeout = 50 * time.Millisecond
		}
		p.unknown(nil)
		out = append(out, ps)
	}
	return out
}

// readCache reads portcullis.cache over what litellm_settings set.
func readCache(o *obj, c CacheSettings) CacheSettings {
	if o.has("enabled") {
		c.Enabled = o.boolean("enabled")
	}
	if o.has("ttl") {
		c.TTL = o.duration("ttl")
	}
	if o.has("max_bytes") {
		c.MaxBytes = int64(o.integer("max_bytes"))
	}
	if o.has("namespace") {
		c.Namespace = o.str("namespace")
	}
	if o.has("call_types") {
		c.CallTypes = o.strs("call_types")
		for _, t := range c.CallTypes {
			switch t {
			case "chat", "completions", "embeddings", "messages":
			default:
				o.r.errf(join(o.path, "call_types"), "unknown call type %q (chat, completions, embeddings, messages)", t)
			}
		}
	}
	c.Scope = o.str("scope")
	switch c.Scope {
	case "":
		c.Scope = "team"
	case "team", "key", "global":
	default:
		o.r.errf(join(o.path, "scope"), "want team, key or global, got %q", c.Scope)
	}
	c.AllRequests = o.boolean("all_requests")
	if o.has("default_off") {
		c.DefaultOff = o.boolean("default_off")
	}
	if c.TTL == 0 {
		c.TTL = 10 * time.Minute
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 256 << 20
	}
	o.unknown(nil)
	return c
}
