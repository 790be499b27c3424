package provider

import (
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/errs"
)

func TestResolveBase(t *testing.T) {
	info := &Info{Name: "together_ai", DefaultBase: "https://api.together.xyz/v1", EnvPrefixes: []string{"TOGETHER_AI", "TOGETHERAI"}}
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	if b, src := ResolveBase(info, "", get); b != "https://api.together.xyz/v1" || src != "default" {
		t.Fatalf("default: %s %s", b, src)
	}
	env["TOGETHERAI_BASE_URL"] = "http://b/v1/"
	if b, src := ResolveBase(info, "", get); b != "http://b/v1" || src != "TOGETHERAI_BASE_URL" {
		t.Fatalf("alias env: %s %s", b, src)
	}
	env["TOGETHER_AI_API_BASE"] = "http://a/v1"
	if b, _ := ResolveBase(info, "", get); b != "http://a/v1" {
		t.Fatalf("canonical env should win: %s", b)
	}
	if b, src := ResolveBase(info, "http://cfg/v1", get); b != "http://cfg/v1" || src != "api_base" {
		t.Fatalf("config should win: %s %s", b, src)
	}
	env["TOGETHERAI_API_KEY"] = "k"
	if ResolveKey(info, "", get) != "k" || ResolveKey(info, "cfg", get) != "cfg" {
		t.Fatal("key resolution")
	}
	if EnvPrefix("hosted_vllm") != "HOSTED_VLLM" || EnvPrefix("fireworks_ai") != "FIREWORKS_AI" {
		t.Fatal("env prefix")
	}
}

func TestClassifyUpstream(t *testing.T) {
	for _, tc := range []struct {
		status    int
		body      string
		code      errs.Code
		retryable bool
		fallback  bool
	}{
		{429, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, errs.CodeRateLimited, true, true},
		{429, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`, errs.CodeQuotaExceeded, false, true},
		{402, `{"error":"Payment required"}`, errs.CodeQuotaExceeded, false, true},
		{400, `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}`, errs.CodeQuotaExceeded, false, true},
		{400, `{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}`, errs.CodeContextWindow, false, false},
		{400, `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}`, errs.CodeContextWindow, false, false},
		{400, `{"error":{"message":"filtered","code":"content_filter"}}`, errs.CodeContentFilter, false, false},
		{500, `upstream exploded`, errs.CodeUpstream, true, true},
		{503, ``, errs.CodeUpstream, true, true},
		{400, `{"error":{"message":"bad"}}`, errs.CodeUpstream, false, false},
	} {
		e := ClassifyUpstream("p", tc.status, []byte(tc.body), []byte("2"), "")
		if e.Code != tc.code || e.Retryable != tc.retryable || e.Fallback != tc.fallback || e.Status != tc.status {
			t.Errorf("%d %s: got %+v", tc.status, tc.body, e)
		}
		if e.RetryAfter != 2 {
			t.Errorf("retry-after not read")
		}
	}
}

func TestUpstreamErrorNeverLeaksTheKey(t *testing.T) {
	key := "sk-proj-abcdef0123456789"
	e := ClassifyUpstream("openai", 401, []byte(`{"error":{"message":"Incorrect API key provided: `+key+`."}}`), nil, key)
	if strings.Contains(e.Message, key) || !strings.Contains(e.Message, "[redacted]") {
		t.Fatalf("message %q", e.Message)
	}
	ep := &Endpoint{Provider: "openai", Secret: key}
	te := ep.transportError(errString("dial tcp: lookup " + key + ".example: no such host"))
	if strings.Contains(te.Message, key) {
		t.Fatalf("transport error leaks the key: %q", te.Message)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestLocalExhaustionIsNotTheUpstreamsFault(t *testing.T) {
	ep := &Endpoint{Provider: "openai"}
	for _, err := range []error{syscall.EADDRNOTAVAIL, syscall.EMFILE, fasthttp.ErrNoFreeConns} {
		e := ep.transportError(&net.OpError{Op: "dial", Err: err})
		if err == fasthttp.ErrNoFreeConns {
			e = ep.transportError(err)
		}
		if e.Status != 503 || e.Provider != "" || e.Fallback {
			t.Errorf("%v: %+v", err, e)
		}
	}
}
