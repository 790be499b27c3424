package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runPolicy(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := policyCommand(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestPolicyTestCommand(t *testing.T) {
	code, out, errOut := runPolicy(t, "test", "../../policies", "--threshold", "85")
	if code != 0 || !strings.Contains(out, "0 failed") || !strings.Contains(out, "coverage:") {
		t.Fatalf("code %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runPolicy(t, "test", "../../policies", "-v", "--run", "test_luhn")
	if code != 0 || !strings.Contains(out, "test_luhn_builtin: PASS") || !strings.Contains(out, "1 passed") {
		t.Fatalf("code %d\n%s", code, out)
	}
	// A threshold above the coverage fails.
	code, out, _ = runPolicy(t, "test", "../../policies", "--run", "test_luhn", "--threshold", "99")
	if code != 1 || !strings.Contains(out, "below the threshold") {
		t.Fatalf("code %d\n%s", code, out)
	}
}

func TestPolicyTestCommandFailure(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "p.rego"), "package gateway\n\ndecision := {\"allow\": true}\n")
	write(t, filepath.Join(dir, "p_test.rego"), "package gateway_test\n\nimport data.gateway\n\ntest_deny if not gateway.decision.allow\n")
	code, out, _ := runPolicy(t, "test", dir, "-v")
	if code != 1 || !strings.Contains(out, "test_deny: FAIL") || !strings.Contains(out, "1 failed") {
		t.Fatalf("code %d\n%s", code, out)
	}
}

func TestPolicyEvalCommand(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "input.json")
	write(t, in, `{"principal": {"team_id": "t"}, "llm": {"model": "gpt-4o", "messages": [{"role": "user", "text": "hi", "path": "/messages/0/content"}]}}`)
	code, out, errOut := runPolicy(t, "eval", "--input", in, "--dir", "../../policies")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(out), &d); err != nil || d["allow"] != true || d["revision"] == "" {
		t.Fatalf("%v: %s", err, out)
	}

	code, out, _ = runPolicy(t, "eval", "--input", in, "--dir", "../../policies", "--explain")
	if code != 0 || !strings.Contains(out, "trace:") || !strings.Contains(out, "data.gateway.decision") {
		t.Fatalf("code %d\n%s", code, out)
	}

	body := filepath.Join(dir, "body.json")
	write(t, body, `{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}`)
	code, out, errOut = runPolicy(t, "eval", "--body", body, "--dir", "../../policies", "--team", "t1")
	if code != 0 || !strings.Contains(out, `"allow": true`) {
		t.Fatalf("code %d\n%s\n%s", code, out, errOut)
	}

	if code, _, _ := runPolicy(t, "eval", "--dir", "../../policies"); code != 2 {
		t.Fatalf("no input: code %d", code)
	}
	if code, _, _ := runPolicy(t, "nope"); code != 2 {
		t.Fatalf("unknown command: code %d", code)
	}
	if code, _, _ := runPolicy(t); code != 2 {
		t.Fatalf("no command: code %d", code)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
