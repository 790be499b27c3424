package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
)

func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	cert, key, pool := selfSigned(t)
	cfg := config.Default()
	rt, err := gateway.Build(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Holder: gateway.NewHolder(rt), Settings: config.ServerSettings{TLSCertFile: cert, TLSKeyFile: key}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	defer s.Shutdown()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post("https://"+ln.Addr().String()+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "chat.completion") {
		t.Fatalf("over TLS: %d %s", resp.StatusCode, b)
	}
	// Streams relayed on the hijacked TLS connection (lean_streams_after
	// 0 here), which then serves the next requests: the client reuses it.
	for i, body := range []string{
		`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
	} {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused }})
		req, _ := http.NewRequestWithContext(ctx, "POST", "https://"+ln.Addr().String()+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d over TLS: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !reused {
			t.Fatalf("request %d over TLS: %d, %v, connection reused %v: %s", i, resp.StatusCode, err, reused, b)
		}
		if strings.Contains(body, "stream") && !strings.Contains(string(b), "data: [DONE]") {
			t.Fatalf("stream %d over TLS without its end: %s", i, b)
		}
	}
}

func TestRequestLogLineHasFieldsAndNoSecrets(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := newHarness(t, "general_settings:\n  master_key: sk-master-secret\n", config.ServerSettings{})
	h.srv.log = zap.New(core)
	h.post("/v1/chat/completions", chat("gpt-4o", ""), "Authorization", "Bearer sk-master-secret")
	h.post("/v1/chat/completions", chat("openai-401", ""), "Authorization", "Bearer sk-master-secret")
	h.post("/v1/chat/completions", chat("gpt-4o", `,"stream":true`), "Authorization", "Bearer sk-master-secret")
	// A stream's line is written after its last byte: wait for it.
	entries := logs.FilterMessage("request").All()
	for end := time.Now().Add(5 * time.Second); len(entries) < 3 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
		entries = logs.FilterMessage("request").All()
	}
	if len(entries) != 3 {
		t.Fatalf("%d request lines, want 3", len(entries))
	}
	f := entries[0].ContextMap()
	for _, k := range []string{"id", "model", "deployment", "status", "latency", "prompt_tokens", "completion_tokens"} {
		if _, ok := f[k]; !ok {
			t.Fatalf("request line lacks %q: %v", k, f)
		}
	}
	if f["status"].(int64) != 200 || f["prompt_tokens"].(int64) != 11 {
		t.Fatalf("fields %v", f)
	}
	if s := entries[2].ContextMap(); s["completion_tokens"].(int64) != 7 {
		t.Fatalf("streamed request tokens not counted: %v", s)
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		for _, secret := range []string{"sk-master-secret", "sk-test-openai", "sk-secret-openai-key"} {
			if strings.Contains(line, secret) {
				t.Fatalf("secret %q logged: %s", secret, line)
			}
		}
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case error:
		return x.Error()
	}
	return ""
}
