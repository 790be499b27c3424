package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/config"
)

func build(t *testing.T, src string) *Runtime {
	t.Helper()
	c, err := config.Parse([]byte(src), "t", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Build(c, Options{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestBuildErrorsNameThePlace(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"model_list:\n  - model_name: a\n    litellm_params: {model: nosuch/x}\n", `model_list[0].litellm_params.model: unknown provider "nosuch"`},
		{"model_list:\n  - model_name: a\n    litellm_params: {model: hosted_vllm/x}\n", "model_list[0].litellm_params.api_base: required for hosted_vllm/ models (or set HOSTED_VLLM_API_BASE)"},
		{"model_list:\n  - model_name: a\n    litellm_params: {model: mock/x, mock_fail_rate: 2}\n", "mock_fail_rate"},
	} {
		c, err := config.Parse([]byte(tc.src), "t.yaml", func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		_, err = Build(c, Options{Getenv: func(string) string { return "" }})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}

func TestBaseURLFromEnvironment(t *testing.T) {
	c, err := config.Parse([]byte("model_list:\n  - model_name: a\n    litellm_params: {model: hosted_vllm/x}\n"), "t", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(c, Options{Getenv: func(k string) string {
		if k == "HOSTED_VLLM_API_BASE" {
			return "http://127.0.0.1:8000/v1"
		}
		return ""
	}}); err != nil {
		t.Fatalf("env base URL not used: %v", err)
	}
}

func TestHolderSwapRetiresAfterLastRelease(t *testing.T) {
	a := build(t, "model_list:\n  - model_name: a\n    litellm_params: {model: mock/a}\n")
	b := build(t, "model_list:\n  - model_name: b\n    litellm_params: {model: mock/b}\n")
	h := NewHolder(a)
	inflight := h.Acquire()
	if inflight != a {
		t.Fatal("acquire returned another snapshot")
	}
	h.Swap(b)
	if h.Acquire() != b {
		t.Fatal("new requests do not see the new snapshot")
	}
	// The old snapshot is still usable by the request holding it.
	if _, ok := inflight.Router.Group("a"); !ok {
		t.Fatal("old snapshot changed under an in-flight request")
	}
	if !a.retired.Load() || a.cleaned.Load() {
		t.Fatal("old snapshot must be retired but not cleaned while a request holds it")
	}
	inflight.Release()
	if a.refs.Load() != 0 || !a.cleaned.Load() {
		t.Fatalf("after the last release: refs = %d, cleaned = %v", a.refs.Load(), a.cleaned.Load())
	}
	if b.cleaned.Load() {
		t.Fatal("the current snapshot was cleaned")
	}
}

func TestReloadKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	good := "model_list:\n  - model_name: a\n    litellm_params: {model: mock/a}\n"
	if err := os.WriteFile(p, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	rt := build(t, good)
	h := NewHolder(rt)
	if err := os.WriteFile(p, []byte("model_list:\n  - model_name: a\n    litellm_params: {model: nosuch/a}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Reload(p, Options{}); err == nil || !strings.Contains(err.Error(), "unknown provider") {
		t.Fatalf("bad reload: %v", err)
	}
	if h.Current() != rt {
		t.Fatal("a failed reload replaced the snapshot")
	}
	if err := os.WriteFile(p, []byte("model_list:\n  - model_name: z\n    litellm_params: {model: mock/z}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Reload(p, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Current().Router.Group("z"); !ok {
		t.Fatal("reload did not take effect")
	}
}
