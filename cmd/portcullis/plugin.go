package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/wasm"
)

const pluginUsage = `usage:
  portcullis plugin test --module x.wasm --input envelope-or-body.json [--hook on_request]
                         [--config cfg.json | --config-json '{...}'] [--expect result.json]
                         [--endpoint chat|completions|embeddings|messages] [--models a,b]
                         [--memory-pages 256] [--timeout 1s] [--trusted]
  portcullis plugin inspect --module x.wasm

test runs one hook of a plugin in the gateway's Wasm host and prints the
result document. --input is a whole envelope (a JSON object with "v" and
"hook"), or a payload the envelope is built around: the request body
(on_request), the response body (on_response) or the event data
(on_stream_event). With --expect, the result is compared (as JSON) with
the file's and the exit status is 1 when they differ; "null" expects the
guest to return 0 (continue, no changes).`

// pluginMain implements `portcullis plugin ...`.
func pluginMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, pluginUsage)
		return 2
	}
	switch args[0] {
	case "test":
		return pluginTest(args[1:], os.Stdout, os.Stderr)
	case "inspect":
		return pluginInspect(args[1:], os.Stdout, os.Stderr)
	case "-h", "--help", "help":
		fmt.Println(pluginUsage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown plugin command %q\n%s\n", args[0], pluginUsage)
	return 2
}

func pluginTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugin test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	module := fs.String("module", "", "the plugin's .wasm file")
	input := fs.String("input", "", "an envelope, or the body/data to build one around (JSON file; - for stdin)")
	hookName := fs.String("hook", "", "on_request, on_response, on_stream_event or on_stream_end (default: the envelope's, else on_request)")
	cfgFile := fs.String("config", "", "the plugin's config (JSON file)")
	cfgJSON := fs.String("config-json", "", "the plugin's config (inline JSON)")
	expect := fs.String("expect", "", "the expected result document (JSON file)")
	endpoint := fs.String("endpoint", "chat", "the endpoint when building an envelope: chat, completions, embeddings, messages")
	models := fs.String("models", "", "model groups for the envelope's \"models\" (comma-separated; default: the body's model)")
	pages := fs.Int("memory-pages", 256, "memory limit in 64 KiB pages")
	timeout := fs.Duration("timeout", time.Second, "hook deadline")
	trusted := fs.Bool("trusted", false, "run without the deadline's loop checks")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *module == "" || *input == "" {
		fmt.Fprintln(stderr, "plugin test: --module and --input are required")
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "plugin test: "+format+"\n", a...)
		return 1
	}
	in, err := readInput(*input)
	if err != nil {
		return fail("%v", err)
	}
	if !json.Valid(in) {
		return fail("%s is not valid JSON", *input)
	}
	var cfg []byte
	switch {
	case *cfgJSON != "":
		cfg = []byte(*cfgJSON)
	case *cfgFile != "":
		if cfg, err = os.ReadFile(*cfgFile); err != nil {
			return fail("%v", err)
		}
	}
	if cfg != nil && !json.Valid(cfg) {
		return fail("the config is not valid JSON")
	}
	root := gjson.ParseBytes(in)
	isEnvelope := root.Get("v").Exists() && root.Get("hook").Type == gjson.String
	name := *hookName
	if name == "" {
		name = "on_request"
		if isEnvelope {
			name = root.Get("hook").Str
		}
	}
	hook, ok := wasm.ParseHook(name)
	if !ok || hook == wasm.HookConfig {
		return fail("unknown hook %q", name)
	}
	d, ok := map[string]llm.Dialect{"chat": llm.OpenAIChat, "completions": llm.OpenAICompletion,
		"embeddings": llm.OpenAIEmbedding, "messages": llm.AnthropicMessages}[*endpoint]
	if !ok {
		return fail("unknown endpoint %q", *endpoint)
	}
	var modelList []string
	if *models != "" {
		modelList = strings.Split(*models, ",")
	}
	x := &pipeline.Exchange{ID: "plugin-test", Dialect: d, Header: nil}
	if hook == wasm.HookRequest && !isEnvelope {
		x.Body = in
		x.Model = root.Get("model").Str
		x.Stream = root.Get("stream").Bool()
		x.MaxTokens = int(root.Get("max_tokens").Int())
		for _, t := range root.Get("tags").Array() {
			x.Tags = append(x.Tags, t.Str)
		}
		if modelList == nil && x.Model != "" {
			modelList = []string{x.Model}
		}
	}
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zap.DebugLevel))
	ps := config.PluginSettings{
		Name: strings.TrimSuffix(filepath.Base(*module), ".wasm"), Module: *module, Config: cfg, MemoryLimitPages: *pages,
		Timeout: *timeout, PoolSize: 1, FailurePolicy: "fail_closed", Trusted: *trusted,
	}
	s, err := wasm.Build([]config.PluginSettings{ps}, wasm.Options{Log: log, CacheDir: "off", Models: modelList})
	if err != nil {
		return fail("%v", err)
	}
	defer s.Close()
	p := s.Plugins()[0]
	env := in
	if !isEnvelope {
		env = s.Envelope(hook, x, in)
	}
	t0 := time.Now()
	raw, res, err := p.Call(hook, env)
	el := time.Since(t0)
	if err != nil {
		var f *wasm.Failure
		if errors.As(err, &f) {
			return fail("plugin failure (%s): %v", f.Reason, err)
		}
		return fail("%v", err)
	}
	out := raw
	if raw == nil {
		out = []byte(`{"action":"continue"}`)
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") != nil {
		pretty.Write(out)
	}
	fmt.Fprintln(stdout, pretty.String())
	fmt.Fprintf(stderr, "%s %s: %s in %v\n", ps.Name, hook, res.Action, el.Round(time.Microsecond))
	if *expect == "" {
		return 0
	}
	want, err := os.ReadFile(*expect)
	if err != nil {
		return fail("%v", err)
	}
	if !sameResult(raw, want) {
		var w bytes.Buffer
		_ = json.Compact(&w, want)
		fmt.Fprintf(stderr, "plugin test: the result differs from %s\n want: %s\n got:  %s\n", *expect, w.String(), out)
		return 1
	}
	fmt.Fprintln(stderr, "ok: the result matches", *expect)
	return 0
}

// sameResult compares a result with the expected document as JSON; a
// guest's 0 matches "null" and {"action":"continue"}.
func sameResult(got, want []byte) bool {
	var g, w any
	if got == nil {
		got = []byte("null")
	}
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(want, &w) != nil {
		return false
	}
	if g == nil && reflect.DeepEqual(w, map[string]any{"action": "continue"}) {
		return true
	}
	return reflect.DeepEqual(g, w)
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

func pluginInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugin inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	module := fs.String("module", "", "the plugin's .wasm file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *module == "" {
		fmt.Fprintln(stderr, "plugin inspect: --module is required")
		return 2
	}
	code, err := os.ReadFile(*module)
	if err != nil {
		fmt.Fprintln(stderr, "plugin inspect:", err)
		return 1
	}
	info, err := wasm.Inspect(context.Background(), code)
	if err != nil {
		fmt.Fprintf(stderr, "plugin inspect: %s is not a valid WebAssembly module: %v\n", *module, err)
		return 1
	}
	none := func(s []string) string {
		if len(s) == 0 {
			return "none"
		}
		return strings.Join(s, ", ")
	}
	fmt.Fprintf(stdout, "module:    %s (%d bytes, sha256 %s)\n", *module, info.Size, info.SHA256)
	fmt.Fprintf(stdout, "abi:       %s (this host supports %s)\n", none(info.ABI), strings.Join(wasm.Supported, ", "))
	fmt.Fprintf(stdout, "hooks:     %s\n", none(info.Hooks))
	fmt.Fprintf(stdout, "on_config: %v\n", info.Config)
	kind := "reactor (_initialize)"
	switch {
	case info.Command && !info.Reactor:
		kind = "command (_start): refused"
	case !info.Reactor:
		kind = "no start function"
	}
	fmt.Fprintf(stdout, "shape:     %s\n", kind)
	max := "no maximum"
	if info.HasMax {
		max = fmt.Sprintf("maximum %d pages", info.MemoryMax)
	}
	fmt.Fprintf(stdout, "memory:    %d pages (%d KiB) at start, %s\n", info.MemoryMin, info.MemoryMin*64, max)
	fmt.Fprintf(stdout, "imports:   %s\n", none(info.Imports))
	if len(info.Problems) > 0 {
		fmt.Fprintln(stdout, "refused:")
		for _, p := range info.Problems {
			fmt.Fprintln(stdout, "  -", p)
		}
		return 1
	}
	fmt.Fprintln(stdout, "status:    loadable")
	return 0
}
