package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const scripted = "../../engine/wasm/testdata/scripted.wasm"

func TestPluginTest(t *testing.T) {
	dir := t.TempDir()
	body := filepath.Join(dir, "body.json")
	os.WriteFile(body, []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`), 0o600)
	expect := filepath.Join(dir, "expect.json")
	os.WriteFile(expect, []byte(`{"labels":["x"]}`), 0o600)
	var out, errb bytes.Buffer
	code := pluginTest([]string{"--module", scripted, "--config-json", `{"labels":["x"]}`, "--input", body, "--expect", expect}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), `"labels"`) {
		t.Fatalf("code %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
	}
	// A differing result fails.
	os.WriteFile(expect, []byte(`null`), 0o600)
	out.Reset()
	errb.Reset()
	if code := pluginTest([]string{"--module", scripted, "--config-json", `{"labels":["x"]}`, "--input", body, "--expect", expect}, &out, &errb); code != 1 {
		t.Fatalf("mismatch: code %d: %s", code, errb.String())
	}
	// The envelope the plugin saw is logged by the scripted guest ("E").
	errb.Reset()
	if code := pluginTest([]string{"--module", scripted, "--config-json", `"E"`, "--input", body, "--models", "a,b"}, &out, &errb); code != 0 ||
		!strings.Contains(errb.String(), `"models":["a","b"]`) || !strings.Contains(errb.String(), `"prompt_chars":2`) {
		t.Fatalf("envelope: code %d: %s", code, errb.String())
	}
	// A trap is reported as a plugin failure.
	errb.Reset()
	if code := pluginTest([]string{"--module", scripted, "--config-json", `"T"`, "--input", body}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "plugin failure (trap)") {
		t.Fatalf("trap: code %d: %s", code, errb.String())
	}
}

func TestPluginInspect(t *testing.T) {
	var out, errb bytes.Buffer
	if code := pluginInspect([]string{"--module", scripted}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "hooks:     on_request, on_response, on_stream_event, on_stream_end") {
		t.Fatalf("code %d: %s %s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := pluginInspect([]string{"--module", "../../engine/wasm/testdata/command.wasm"}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "command module") {
		t.Fatalf("command: code %d: %s", code, out.String())
	}
}
