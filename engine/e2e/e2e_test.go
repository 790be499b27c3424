//go:build e2e

// Package e2e runs the built gateway binary against the fake upstream and
// drives it with the official OpenAI and Anthropic SDKs (node/*.test.mjs),
// then checks from Go what the gateway sent upstream.
//
// Run it with `make e2e` (builds bin/portcullis and installs the SDKs).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/testupstream"
)

// litellmConfig is the configuration from the issue. It must load
// unchanged: the first gateway serves exactly this file.
const litellmConfig = `model_list:
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

// extraModels are appended to the model list of the second gateway: the
// fake upstream fails, or cuts streams, by words in the model name.
const extraModels = `  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_key: os.environ/OPENAI_API_KEY
  - model_name: broken-429
    litellm_params:
      model: openai/gpt-4o-fail-429
      api_key: os.environ/OPENAI_API_KEY
  - model_name: broken-500
    litellm_params:
      model: openai/gpt-4o-fail-500
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude-broken
    litellm_params:
      model: anthropic/claude-fail-529
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: broken-cut
    litellm_params:
      model: openai/gpt-4o-cut-2
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude-cut
    litellm_params:
      model: anthropic/claude-cut-2
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: slow-stream
    litellm_params:
      model: openai/gpt-4o-chunks-6-gap-150
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude-slow-stream
    litellm_params:
      model: anthropic/claude-chunks-6-gap-150
      api_key: os.environ/ANTHROPIC_API_KEY
`

const masterKey = "sk-e2e-master"

// Upstream credentials the gateway is given through the environment.
const (
	openaiKey    = "sk-test-openai"
	anthropicKey = "sk-ant-test"
	mistralKey   = "mistral-test"
)

// extendedConfig is litellmConfig with extraModels at the end of its
// model_list and a master key.
func extendedConfig() string {
	i := strings.Index(litellmConfig, "router_settings:")
	return litellmConfig[:i] + extraModels + litellmConfig[i:] + "general_settings:\n  master_key: " + masterKey + "\n"
}

func TestE2E(t *testing.T) {
	start := time.Now()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "portcullis")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("gateway binary %s not found: run `make build` (or `make e2e`) from the repository root first", bin)
	}
	nodeDir := filepath.Join(root, "engine", "e2e", "node")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found on PATH: the end-to-end suite needs Node.js 20 or newer")
	}
	for _, pkg := range []string{"openai", "@anthropic-ai/sdk"} {
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed in %s: run `make e2e-deps` first", pkg, nodeDir)
		}
	}

	up, err := testupstream.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Close() })

	dir := t.TempDir()
	env := []string{
		"OPENAI_BASE_URL=" + up.URL() + "/v1",
		"ANTHROPIC_BASE_URL=" + up.URL(),
		"MISTRAL_API_BASE=" + up.URL() + "/v1",
		"OPENAI_API_KEY=" + openaiKey,
		"ANTHROPIC_API_KEY=" + anthropicKey,
		"MISTRAL_API_KEY=" + mistralKey,
	}
	plain := startGateway(t, bin, "litellm", writeFile(t, dir, "litellm.yaml", litellmConfig), env)
	full := startGateway(t, bin, "extended", writeFile(t, dir, "extended.yaml", extendedConfig()), env)
	guarded := startGateway(t, bin, "guarded", writeFile(t, dir, "guarded.yaml", guardedConfig(policyDirFor(t, root, dir), root)), env)
	if n := gjson.Get(plain.ready, "models").Int(); n != 3 {
		t.Errorf("the LiteLLM config serves %d models, want 3 (readiness: %s)", n, plain.ready)
	}

	t.Run("sdk", func(t *testing.T) {
		t.Run("litellm-config", func(t *testing.T) {
			t.Parallel()
			runNode(t, node, nodeDir, plain.url, "", "litellm-config.test.mjs")
		})
		t.Run("openai-anthropic", func(t *testing.T) {
			t.Parallel()
			runNode(t, node, nodeDir, full.url, masterKey, "openai.test.mjs", "anthropic.test.mjs", "keys.test.mjs")
		})
		t.Run("policies-cache", func(t *testing.T) {
			t.Parallel()
			runNode(t, node, nodeDir, guarded.url, masterKey, "guard.test.mjs")
		})
	})

	t.Run("policy-mutations-upstream", func(t *testing.T) {
		// The interns' max_tokens cap reached the upstream; the redacted
		// address never did.
		var capped bool
		for _, r := range up.Requests() {
			if bytes.Contains(r.Body, []byte("jane.doe@example.com")) {
				t.Errorf("the upstream received the e-mail address: %s", r.Body)
			}
			if bytes.Contains(r.Body, []byte("cap-marker-1234")) {
				capped = true
				if n := gjson.GetBytes(r.Body, "max_tokens").Int(); n != 64 {
					t.Errorf("max_tokens upstream %d, want the policy's cap 64: %s", n, r.Body)
				}
			}
		}
		if !capped {
			t.Error("the capped request never reached the upstream")
		}
		// The routing plugin: short prompts went to the small model, long
		// ones to the large one.
		routed := map[string]string{}
		for _, r := range up.Requests() {
			for _, m := range []string{"route-short-1", "route-long-1"} {
				if bytes.Contains(r.Body, []byte(m)) {
					routed[m] = gjson.GetBytes(r.Body, "model").String()
				}
			}
		}
		if routed["route-short-1"] != "gpt-4o-mini" || routed["route-long-1"] != "gpt-4o" {
			t.Errorf("routing plugin: upstream models %v, want short -> gpt-4o-mini, long -> gpt-4o", routed)
		}
	})

	t.Run("upstream", func(t *testing.T) { checkUpstream(t, up.Requests()) })

	t.Run("shutdown", func(t *testing.T) {
		plain.stop(t)
		// SIGTERM while a stream is in flight: the stream still finishes,
		// then the process exits 0.
		drained := make(chan error, 1)
		started := make(chan struct{})
		go func() { drained <- streamThroughShutdown(full.url, started) }()
		select {
		case <-started:
		case err := <-drained:
			t.Fatalf("in-flight stream before SIGTERM: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the in-flight stream did not start within 10s")
		}
		full.stop(t)
		guarded.stop(t)
		if err := <-drained; err != nil {
			t.Errorf("a stream in flight at SIGTERM did not finish cleanly: %v", err)
		}
	})
	t.Logf("end-to-end run took %s", time.Since(start).Round(time.Millisecond))
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gateway is one running gateway process.
type gateway struct {
	name  string
	url   string
	ready string // the readiness body
	cmd   *exec.Cmd
	done  chan struct{}
	err   error // the process's exit, valid after done
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logTail bounds the gateway output printed when the test fails.
const logTail = 80

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startGateway runs bin on a free port and waits for its readiness. The
// process's output is kept and printed if the test fails.
func startGateway(t *testing.T, bin, name, cfg string, env []string) *gateway {
	t.Helper()
	return startGatewayIn(t, bin, name, cfg, env, t.TempDir())
}

// startGatewayIn is startGateway with the working directory (where the
// default SQLite file lives) chosen by the caller, for restarts.
func startGatewayIn(t *testing.T, bin, name, cfg string, env []string, dir string) *gateway {
	t.Helper()
	port := freePort(t)
	g := &gateway{name: name, url: "http://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{}), logs: &syncBuffer{}}
	g.cmd = exec.Command(bin, "--config", cfg, "--port", strconv.Itoa(port), "--host", "127.0.0.1")
	g.cmd.Env = append(hermeticEnv(), env...)
	// The default SQLite file lands in the working directory.
	g.cmd.Dir = dir
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("starting gateway %s: %v", name, err)
	}
	go func() { g.err = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			_ = g.cmd.Process.Kill()
			<-g.done
		}
		if t.Failed() {
			t.Logf("gateway %s output (last %d lines):\n%s", name, logTail, tail(g.logs.String(), logTail))
		}
	})

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-g.done:
			t.Fatalf("gateway %s exited before it was ready (%v):\n%s", name, g.err, g.logs.String())
		default:
		}
		if resp, err := client.Get(g.url + "/health/readiness"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				g.ready = string(body)
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s not ready within 10s:\n%s", name, g.logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stop sends SIGTERM and requires a clean exit within 10 s.
func (g *gateway) stop(t *testing.T) {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("gateway %s: SIGTERM: %v", g.name, err)
		return
	}
	select {
	case <-g.done:
		if g.err != nil {
			t.Errorf("gateway %s exited with %v after SIGTERM, want exit status 0", g.name, g.err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("gateway %s still running 10s after SIGTERM", g.name)
	}
}

// streamThroughShutdown streams from the slow model, closing started once
// the first chunk arrived, and returns nil if the stream then ends with
// [DONE] and all its content.
func streamThroughShutdown(url string, started chan<- struct{}) error {
	body := `{"model":"slow-stream","stream":true,"messages":[{"role":"user","content":"drain"}]}`
	req, err := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+masterKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	content, once := 0, false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			if content != 6 {
				return fmt.Errorf("stream ended with %d content chunks, want 6", content)
			}
			return nil
		}
		if gjson.Get(data, "error").Exists() {
			return fmt.Errorf("error event: %s", data)
		}
		if gjson.Get(data, "choices.0.delta.content").String() != "" {
			content++
			if !once {
				once = true
				close(started)
			}
		}
	}
	return fmt.Errorf("stream ended without [DONE] after %d content chunks (%v)", content, sc.Err())
}

// hermeticEnv is the environment without provider variables, so neither
// the gateway nor the SDKs pick up the developer's real keys or base URLs.
func hermeticEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OPENAI_") || strings.HasPrefix(k, "ANTHROPIC_") || strings.HasPrefix(k, "MISTRAL_") ||
			strings.HasPrefix(k, "PORTCULLIS_") || k == "CONFIG_FILE_PATH" || k == "PORT" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// lineLogger writes each line to the test log as it arrives.
type lineLogger struct {
	t    *testing.T
	mu   sync.Mutex
	part []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log(string(l.part[:i]))
		l.part = l.part[i+1:]
	}
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.part) > 0 {
		l.t.Log(string(l.part))
		l.part = nil
	}
}

// runNode runs `node --test files...` against the gateway at url.
func runNode(t *testing.T, node, dir, url, key string, files ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	args := append([]string{"--test", "--test-reporter=spec"}, files...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	// node --test runs each file in a child process: on timeout the whole
	// process group goes, and a child still holding the output pipe cannot
	// keep Run waiting.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(hermeticEnv(), "PORTCULLIS_URL="+url, "NO_COLOR=1", "FORCE_COLOR=0")
	if key != "" {
		cmd.Env = append(cmd.Env, "PORTCULLIS_KEY="+key)
	}
	out := &lineLogger{t: t}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	if ctx.Err() != nil {
		t.Fatalf("node --test %s did not finish within 45s", strings.Join(files, " "))
	}
	if err != nil {
		t.Fatalf("node --test %s failed: %v (see the output above)", strings.Join(files, " "), err)
	}
}

// checkUpstream asserts what the gateway sent to the providers.
func checkUpstream(t *testing.T, reqs []testupstream.Request) {
	if len(reqs) == 0 {
		t.Fatal("the upstream recorded no requests")
	}
	var openaiChat, anthropicMsgs, mistralChat, embeddings, completions []testupstream.Request
	for _, r := range reqs {
		// No credential of the gateway's clients ever goes upstream: not
		// the master key, not the placeholder key of the keyless gateway.
		for _, secret := range []string{masterKey, "sk-no-master-key", "sk-wrong", "sk-ant-wrong"} {
			for k, v := range r.Headers {
				if strings.Contains(v, secret) {
					t.Errorf("%s %s: header %s carries the client credential %q", r.Method, r.Path, k, secret)
				}
			}
			if bytes.Contains(r.Body, []byte(secret)) {
				t.Errorf("%s %s: body carries the client credential %q", r.Method, r.Path, secret)
			}
		}
		if r.Method != "POST" {
			t.Errorf("%s %s: want POST", r.Method, r.Path)
		}
		if ct := r.Headers["content-type"]; !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s %s: content-type %q, want application/json", r.Method, r.Path, ct)
		}
		if !gjson.ValidBytes(r.Body) {
			t.Errorf("%s %s: body is not JSON: %.200s", r.Method, r.Path, r.Body)
			continue
		}
		model := gjson.GetBytes(r.Body, "model").String()
		switch {
		case r.Path == "/v1/chat/completions" && model == "mistral-small-latest":
			mistralChat = append(mistralChat, r)
		case r.Path == "/v1/chat/completions":
			openaiChat = append(openaiChat, r)
		case r.Path == "/v1/messages":
			anthropicMsgs = append(anthropicMsgs, r)
		case r.Path == "/v1/embeddings":
			embeddings = append(embeddings, r)
		case r.Path == "/v1/completions":
			completions = append(completions, r)
		default:
			t.Errorf("unexpected upstream request %s %s: %.200s", r.Method, r.Path, r.Body)
		}
	}

	t.Run("openai", func(t *testing.T) {
		requireSome(t, "POST /v1/chat/completions for the openai deployment", openaiChat)
		sawPlain := false
		for _, r := range openaiChat {
			checkBearer(t, r, openaiKey)
			checkOpenAIChatBody(t, r)
			model := gjson.GetBytes(r.Body, "model").String()
			if !strings.HasPrefix(model, "gpt-4o") {
				t.Errorf("openai chat request for model %q, want the deployment's gpt-4o*", model)
			}
			sawPlain = sawPlain || model == "gpt-4o"
			// The gateway asks OpenAI for usage on every stream so it can
			// count tokens (and hides the chunk from clients that did not
			// ask for it).
			if gjson.GetBytes(r.Body, "stream").Bool() && !gjson.GetBytes(r.Body, "stream_options.include_usage").Bool() {
				t.Errorf("streamed openai request without stream_options.include_usage: %.300s", r.Body)
			}
		}
		if !sawPlain {
			t.Error("no openai chat request named the upstream model gpt-4o")
		}
		// The Anthropic SDK's system prompt, translated to a system message.
		r, ok := find(openaiChat, "e2e-anthropic-system")
		if !ok {
			t.Error("no openai request carried the Anthropic SDK's system prompt")
		} else if role := gjson.GetBytes(r.Body, "messages.0.role").String(); role != "system" ||
			!strings.Contains(gjson.GetBytes(r.Body, "messages.0.content").String(), "e2e-anthropic-system") {
			t.Errorf("Anthropic system prompt not sent as the first (system) message: %.400s", r.Body)
		}
		// Anthropic sampling parameters, translated.
		r, ok = find(openaiChat, "params-marker-anthropic")
		if !ok {
			t.Error("no openai request carried the Anthropic SDK's parameters test")
		} else {
			b := r.Body
			if mt := gjson.GetBytes(b, "max_tokens").Int() + gjson.GetBytes(b, "max_completion_tokens").Int(); mt != 55 {
				t.Errorf("Anthropic max_tokens 55 sent as max_tokens/max_completion_tokens %d: %.400s", mt, b)
			}
			if v := gjson.GetBytes(b, "temperature").Float(); v != 0.4 {
				t.Errorf("temperature %v, want 0.4: %.400s", v, b)
			}
			if v := gjson.GetBytes(b, "stop").Raw; v != `["STOP"]` && v != `"STOP"` {
				t.Errorf("Anthropic stop_sequences sent as stop %s: %.400s", v, b)
			}
			if v := gjson.GetBytes(b, "user").String(); v != "e2e-anthropic-user" {
				t.Errorf("Anthropic metadata.user_id sent as user %q: %.400s", v, b)
			}
			for _, k := range []string{"top_k", "stop_sequences", "metadata", "system"} {
				if gjson.GetBytes(b, k).Exists() {
					t.Errorf("Anthropic-only field %q sent to OpenAI: %.400s", k, b)
				}
			}
		}
		// The Anthropic SDK's tool_use/tool_result round trip, translated.
		r, ok = findAll(byModel(openaiChat, "gpt-4o"), "thanks, summarise")
		if !ok {
			t.Error("no openai request carried the Anthropic SDK's tool_result turn")
		} else {
			msgs := gjson.GetBytes(r.Body, "messages").Array()
			var call, result gjson.Result
			for _, m := range msgs {
				if m.Get("role").String() == "assistant" && m.Get("tool_calls.0").Exists() {
					call = m.Get("tool_calls.0")
				}
				if m.Get("role").String() == "tool" {
					result = m
				}
			}
			switch {
			case !call.Exists():
				t.Errorf("translated tool round trip has no assistant tool_calls: %.600s", r.Body)
			case call.Get("function.name").String() != "get_weather" || call.Get("type").String() != "function":
				t.Errorf("translated tool call: %s", call.Raw)
			case !gjson.Valid(call.Get("function.arguments").String()) || gjson.Get(call.Get("function.arguments").String(), "location").String() != "Paris":
				t.Errorf("translated tool call arguments are not the JSON string of the tool_use input: %s", call.Raw)
			}
			switch {
			case !result.Exists():
				t.Errorf("translated tool round trip has no tool message: %.600s", r.Body)
			case result.Get("tool_call_id").String() != call.Get("id").String():
				t.Errorf("tool message tool_call_id %q does not match the call id %q", result.Get("tool_call_id"), call.Get("id"))
			case !strings.Contains(result.Get("content").Raw, "temp_c"):
				t.Errorf("tool message lost the tool_result content: %s", result.Raw)
			}
			if tc := gjson.GetBytes(r.Body, "tool_choice"); tc.String() != "none" {
				t.Errorf("Anthropic tool_choice {type: none} sent as %s, want \"none\"", tc.Raw)
			}
			if tool := gjson.GetBytes(r.Body, "tools.0"); tool.Get("type").String() != "function" ||
				tool.Get("function.name").String() != "get_weather" || !tool.Get("function.parameters.properties.location").Exists() {
				t.Errorf("Anthropic tool not translated to an OpenAI function tool: %s", tool.Raw)
			}
		}
	})

	t.Run("anthropic", func(t *testing.T) {
		requireSome(t, "POST /v1/messages for the anthropic deployment", anthropicMsgs)
		for _, r := range anthropicMsgs {
			if got := r.Headers["x-api-key"]; got != anthropicKey {
				t.Errorf("anthropic request x-api-key %q, want %q", got, anthropicKey)
			}
			if _, ok := r.Headers["authorization"]; ok {
				t.Errorf("anthropic request carries an Authorization header: %q", r.Headers["authorization"])
			}
			if r.Headers["anthropic-version"] == "" {
				t.Error("anthropic request without anthropic-version")
			}
			checkAnthropicBody(t, r)
		}
		// The OpenAI SDK's system message, moved to the top-level system.
		r, ok := find(anthropicMsgs, "e2e-system-marker")
		if !ok {
			t.Error("no anthropic request carried the OpenAI SDK's system message")
		} else if !strings.Contains(gjson.GetBytes(r.Body, "system").Raw, "e2e-system-marker") {
			t.Errorf("OpenAI system message not sent as the top-level system: %.400s", r.Body)
		}
		// OpenAI sampling parameters and a developer message, translated.
		r, ok = find(anthropicMsgs, "params-marker-openai")
		if !ok {
			t.Error("no anthropic request carried the OpenAI SDK's parameters test")
		} else {
			b := r.Body
			checks := []struct {
				path, want string
			}{
				{"max_tokens", "77"},
				{"temperature", "0.3"},
				{"top_p", "0.9"},
				{"stop_sequences", `["END"]`},
				{"metadata.user_id", `"e2e-user"`},
			}
			for _, c := range checks {
				if got := gjson.GetBytes(b, c.path).Raw; got != c.want {
					t.Errorf("anthropic %s = %s, want %s: %.400s", c.path, got, c.want, b)
				}
			}
			if !strings.Contains(gjson.GetBytes(b, "system").Raw, "e2e-developer-marker") {
				t.Errorf("OpenAI developer message not in the top-level system: %.400s", b)
			}
			for _, k := range []string{"max_completion_tokens", "stop", "user", "top_k"} {
				if gjson.GetBytes(b, k).Exists() {
					t.Errorf("field %q sent to Anthropic: %.400s", k, b)
				}
			}
		}
		// The beta SDK call's anthropic-beta header is forwarded.
		r, ok = find(anthropicMsgs, "beta-marker")
		if !ok {
			t.Error("no anthropic request carried the beta.messages call")
		} else if got := r.Headers["anthropic-beta"]; got != "e2e-beta-2025-01-01" {
			t.Errorf("anthropic-beta %q reached the upstream, want e2e-beta-2025-01-01", got)
		}
		// The Anthropic SDK's own system passes through top-level.
		r, ok = find(anthropicMsgs, "e2e-anthropic-system")
		if !ok {
			t.Error("no anthropic request carried the Anthropic SDK's system prompt")
		} else {
			if !strings.Contains(gjson.GetBytes(r.Body, "system").Raw, "e2e-anthropic-system") {
				t.Errorf("Anthropic system prompt not top-level: %.400s", r.Body)
			}
			if v := r.Headers["anthropic-version"]; v != "2023-06-01" {
				t.Errorf("anthropic-version %q, want the SDK's 2023-06-01", v)
			}
		}
		// The OpenAI SDK's tool round trip on the Anthropic deployment:
		// assistant tool_calls become a tool_use block, the tool message a
		// tool_result in a user turn.
		r, ok = findAll(anthropicMsgs, "temp_c", "and now?")
		if !ok {
			t.Error("no anthropic request carried the OpenAI SDK's tool result turn")
		} else {
			var use, result gjson.Result
			for _, m := range gjson.GetBytes(r.Body, "messages").Array() {
				for _, b := range m.Get("content").Array() {
					switch b.Get("type").String() {
					case "tool_use":
						if m.Get("role").String() == "assistant" {
							use = b
						}
					case "tool_result":
						if m.Get("role").String() == "user" {
							result = b
						}
					}
				}
			}
			switch {
			case !use.Exists():
				t.Errorf("no assistant tool_use block: %.600s", r.Body)
			case use.Get("name").String() != "get_weather" || use.Get("input.location").String() != "Paris" || !use.Get("input").IsObject():
				t.Errorf("tool_use block: %s", use.Raw)
			}
			switch {
			case !result.Exists():
				t.Errorf("no user tool_result block: %.600s", r.Body)
			case result.Get("tool_use_id").String() != use.Get("id").String():
				t.Errorf("tool_result tool_use_id %q does not match tool_use id %q", result.Get("tool_use_id"), use.Get("id"))
			case !strings.Contains(result.Get("content").Raw, "temp_c"):
				t.Errorf("tool_result lost the tool content: %s", result.Raw)
			}
			if tools := gjson.GetBytes(r.Body, "tools.0"); tools.Get("name").String() != "get_weather" || !tools.Get("input_schema.properties.location").Exists() {
				t.Errorf("OpenAI tool not translated to an Anthropic tool: %s", tools.Raw)
			}
		}
	})

	t.Run("mistral", func(t *testing.T) {
		requireSome(t, "POST /v1/chat/completions for the mistral deployment", mistralChat)
		sawAnthropicStream := false
		for _, r := range mistralChat {
			checkBearer(t, r, mistralKey)
			checkOpenAIChatBody(t, r)
			// Mistral rejects stream_options with 422 ("extra_forbidden"),
			// so the gateway must not add it: the openai provider leaves
			// mistral out of the providers it asks for stream usage. Only
			// the OpenAI SDK test that sets stream_options itself
			// ("count with usage") may carry it, passed through as sent.
			stream := gjson.GetBytes(r.Body, "stream").Bool()
			if stream && bytes.Contains(r.Body, []byte("stream please")) {
				sawAnthropicStream = true
			}
			if gjson.GetBytes(r.Body, "stream_options").Exists() && !bytes.Contains(r.Body, []byte("count with usage")) {
				t.Errorf("mistral request carries stream_options the client did not send (Mistral answers 422 extra_forbidden): %.400s", r.Body)
			}
		}
		if !sawAnthropicStream {
			t.Error("no streamed mistral request from the Anthropic SDK was recorded")
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		requireSome(t, "POST /v1/embeddings", embeddings)
		formats := map[string]bool{}
		for _, r := range embeddings {
			checkBearer(t, r, openaiKey)
			if m := gjson.GetBytes(r.Body, "model").String(); m != "text-embedding-3-small" {
				t.Errorf("embeddings model %q, want text-embedding-3-small", m)
			}
			formats[gjson.GetBytes(r.Body, "encoding_format").String()] = true
		}
		for _, f := range []string{"float", "base64"} {
			if !formats[f] {
				t.Errorf("no embeddings request passed encoding_format %q upstream (saw %v)", f, formats)
			}
		}
	})

	t.Run("completions", func(t *testing.T) {
		requireSome(t, "POST /v1/completions", completions)
		for _, r := range completions {
			checkBearer(t, r, openaiKey)
			if m := gjson.GetBytes(r.Body, "model").String(); m != "gpt-4o" {
				t.Errorf("completions model %q, want gpt-4o", m)
			}
			if !gjson.GetBytes(r.Body, "prompt").Exists() {
				t.Errorf("completions request without prompt: %.300s", r.Body)
			}
		}
	})
}

func requireSome(t *testing.T, what string, rs []testupstream.Request) {
	t.Helper()
	if len(rs) == 0 {
		t.Fatalf("the upstream never received %s", what)
	}
}

func checkBearer(t *testing.T, r testupstream.Request, key string) {
	t.Helper()
	if got, want := r.Headers["authorization"], "Bearer "+key; got != want {
		t.Errorf("%s (model %s): Authorization %q, want %q", r.Path, gjson.GetBytes(r.Body, "model"), got, want)
	}
	if _, ok := r.Headers["x-api-key"]; ok {
		t.Errorf("%s: OpenAI-compatible request carries x-api-key", r.Path)
	}
}

// checkOpenAIChatBody checks the shape of an OpenAI chat request.
func checkOpenAIChatBody(t *testing.T, r testupstream.Request) {
	t.Helper()
	b := r.Body
	msgs := gjson.GetBytes(b, "messages")
	if !msgs.IsArray() || len(msgs.Array()) == 0 {
		t.Errorf("OpenAI chat body without messages: %.300s", b)
		return
	}
	for _, m := range msgs.Array() {
		switch role := m.Get("role").String(); role {
		case "system", "developer", "user", "assistant", "tool":
		default:
			t.Errorf("OpenAI chat message with role %q: %s", role, m.Raw)
		}
		for _, part := range m.Get("content").Array() {
			if typ := part.Get("type").String(); typ == "tool_use" || typ == "tool_result" {
				t.Errorf("Anthropic content block %q in an OpenAI body: %.300s", typ, b)
			}
		}
	}
	if gjson.GetBytes(b, "system").Exists() {
		t.Errorf("OpenAI chat body with a top-level system: %.300s", b)
	}
}

// checkAnthropicBody checks the shape of an Anthropic Messages request.
func checkAnthropicBody(t *testing.T, r testupstream.Request) {
	t.Helper()
	b := r.Body
	if mt := gjson.GetBytes(b, "max_tokens"); mt.Type != gjson.Number || mt.Int() <= 0 {
		t.Errorf("Anthropic body without a positive max_tokens: %.300s", b)
	}
	if m := gjson.GetBytes(b, "model").String(); !strings.HasPrefix(m, "claude-") {
		t.Errorf("Anthropic body for model %q, want the deployment's claude-*", m)
	}
	msgs := gjson.GetBytes(b, "messages")
	if !msgs.IsArray() || len(msgs.Array()) == 0 {
		t.Errorf("Anthropic body without messages: %.300s", b)
		return
	}
	for _, m := range msgs.Array() {
		if role := m.Get("role").String(); role != "user" && role != "assistant" {
			t.Errorf("Anthropic message with role %q (system must be top-level): %s", role, m.Raw)
		}
	}
	if msgs.Array()[0].Get("role").String() != "user" {
		t.Errorf("Anthropic conversation does not start with a user turn: %.300s", b)
	}
	for _, k := range []string{"stream_options", "tool_calls", "n", "functions"} {
		if gjson.GetBytes(b, k).Exists() {
			t.Errorf("OpenAI-only field %q in an Anthropic body: %.300s", k, b)
		}
	}
	if sys := gjson.GetBytes(b, "system"); sys.Exists() && sys.Type != gjson.String && !sys.IsArray() {
		t.Errorf("Anthropic system is neither a string nor blocks: %s", sys.Raw)
	}
}

// byModel returns the requests for one upstream model.
func byModel(rs []testupstream.Request, model string) []testupstream.Request {
	var out []testupstream.Request
	for _, r := range rs {
		if gjson.GetBytes(r.Body, "model").String() == model {
			out = append(out, r)
		}
	}
	return out
}

// find returns the first request whose body contains s.
func find(rs []testupstream.Request, s string) (testupstream.Request, bool) {
	return findAll(rs, s)
}

// findAll returns the first request whose body contains every string.
func findAll(rs []testupstream.Request, ss ...string) (testupstream.Request, bool) {
next:
	for _, r := range rs {
		for _, s := range ss {
			if !bytes.Contains(r.Body, []byte(s)) {
				continue next
			}
		}
		return r, true
	}
	return testupstream.Request{}, false
}
