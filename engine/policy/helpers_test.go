package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// shippedDir is the repository's policies directory.
const shippedDir = "../../policies"

// headers is a provider.Headers over a map (lower-case keys).
type headers map[string]string

func (h headers) Peek(k string) []byte {
	if v, ok := h[strings.ToLower(k)]; ok {
		return []byte(v)
	}
	return nil
}

// writeFiles writes name → content under dir (creating directories).
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// shippedCopy copies the shipped policies (tests included when withTests)
// into a temporary directory and adds data as data.json.
func shippedCopy(t testing.TB, withTests bool, data any) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{}
	entries, err := os.ReadDir(filepath.Join(shippedDir, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".rego") || (!withTests && strings.HasSuffix(e.Name(), "_test.rego")) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(shippedDir, "gateway", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files["gateway/"+e.Name()] = string(b)
	}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		files["data.json"] = string(b)
	}
	writeFiles(t, dir, files)
	return dir
}

// newEngine starts an engine on dir without watching, logging to an
// observer.
func newEngine(t testing.TB, s config.PolicySettings) (*Engine, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	if s.Timeout == 0 {
		s.Timeout = time.Second
	}
	e, err := New(s, Options{Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, logs
}

// exchange is a chat request exchange for body.
func exchange(body string) *pipeline.Exchange {
	x := &pipeline.Exchange{Ctx: context.Background(), ID: "req-1", Start: time.Unix(1736157600, 0), Dialect: llm.OpenAIChat,
		Body: []byte(body), Header: headers{"x-region": "eu", "authorization": "Bearer sk-secret", "user-agent": "test"}}
	x.Model = gjsonString(body, "model")
	return x
}

// serve runs the middleware with a next that records it was reached.
func serve(e *Engine, x *pipeline.Exchange) (reached bool, err error) {
	err = e.Middleware().Serve(x, func(*pipeline.Exchange) error { reached = true; return nil })
	return reached, err
}

func gjsonString(body, path string) string { return gjson.Get(body, path).Str }

// writeBundle writes an OPA bundle (.tar.gz) of files.
func writeBundle(t testing.TB, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
