package main

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/store/sqlite"
)

// The bulk seed writes the same rows as one CreateKey per key, resumes
// where a previous seed stopped, and the keys are the ones the generator
// sends.
func TestSeedKeysBulk(t *testing.T) {
	dir := t.TempDir()
	bulk, one := filepath.Join(dir, "bulk.db"), filepath.Join(dir, "one.db")
	if err := seedKeysBulk(bulk, 0, 1234, nil); err != nil { // several 500-row statements
		t.Fatal(err)
	}
	if err := seedKeysBulk(bulk, 1234, 1300, nil); err != nil {
		t.Fatal(err)
	}
	if err := seedKeys(one, 0, 3, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := countKeys(bulk); err != nil || n != 1300 {
		t.Fatalf("count %d, %v", n, err)
	}
	sb, err := sqlite.Open(bulk, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	so, err := sqlite.Open(one, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer so.Close()
	ctx := context.Background()
	ref, err := so.GetKey(ctx, keys.Hash(benchSecret(2)))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 2, 777, 1233, 1234, 1299} {
		k, err := sb.GetKey(ctx, keys.Hash(benchSecret(i)))
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if k.Prefix != seedPrefix(benchSecret(i)) || k.Prefix != "sk-..."+benchSecret(i)[16:] {
			t.Fatalf("key %d: prefix %q", i, k.Prefix)
		}
		if k.CreatedBy != ref.CreatedBy || k.Blocked || k.Spend != 0 || len(k.Models) != 0 || k.Limits.MaxBudget != nil || k.ExpiresAt != nil || k.CreatedAt.IsZero() {
			t.Fatalf("key %d: %+v, want like %+v", i, k, ref)
		}
	}
	if _, err := sb.GetKey(ctx, keys.Hash(benchSecret(1300))); err == nil {
		t.Fatal("key 1300 exists")
	}
}

func TestKeyRequest(t *testing.T) {
	b := &bench{m: modes["short"]}
	ks := newKeyset(1000)
	tg := &target{name: "k", addr: "127.0.0.1:1", gateway: true, header: []string{"Authorization: Bearer " + benchSecret(0)}, ks: ks}
	build := b.keyRequest(tg)
	seen := map[int]bool{}
	var buf []byte
	for i := range 20000 {
		var class int
		buf, class = build(int64(i), buf[:0])
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf)))
		if err != nil {
			t.Fatal(err)
		}
		secret, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer sk-bench-")
		n, err := strconv.Atoi(secret)
		if !ok || err != nil || len(secret) != 9 || n < 0 || n >= 1000 {
			t.Fatalf("request %d: Authorization %q", i, req.Header.Get("Authorization"))
		}
		if want := map[bool]int{true: classRepeat, false: classFirst}[seen[n]]; class != want {
			t.Fatalf("request %d: key %d class %d, want %d", i, n, class, want)
		}
		seen[n] = true
		if req.ContentLength != int64(len(b.request(tg, false, false).Body)) {
			t.Fatalf("content length %d", req.ContentLength)
		}
	}
	// 20,000 uniform draws over 1,000 keys miss one with probability 2e-6.
	if len(seen) != 1000 || ks.distinct() != 1000 {
		t.Fatalf("%d keys sent, %d marked", len(seen), ks.distinct())
	}
}

func TestGatewayConfig(t *testing.T) {
	c, err := config.Parse([]byte(gatewayConfig(gwOpts{upPort: 9, master: benchMaster, cacheKeys: 1000000, level: "warn"})), "bench", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.General.MasterKey != benchMaster || c.Auth.KeyCacheSize != 1000000 || c.Log.Level != "warn" || len(c.Models) != 3 ||
		c.Models[0].InputCostPerToken == 0 || c.Models[0].APIBase != "http://127.0.0.1:9/v1" || len(c.Warnings) != 0 {
		t.Fatalf("%+v", c)
	}
	c, err = config.Parse([]byte(gatewayConfig(gwOpts{upPort: 9})), "bench", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.General.MasterKey != "" || c.Auth.KeyCacheSize != 0 || c.Models[0].InputCostPerToken != 0 || len(c.Warnings) != 0 {
		t.Fatalf("%+v", c)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1000000: "1,000,000"} {
		if got := thousands(n); got != want {
			t.Errorf("%d: %q", n, got)
		}
	}
}
