package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/policy"
	"github.com/portcullis/portcullis/engine/store"
)

// revPolicy tags every request with the revision number in its data, so a
// record shows which data its decision read; the revision id recorded
// beside it must be the revision that data belongs to.
const revPolicy = `package gateway

decision := {"allow": true, "status": 200, "reasons": [], "mutations": {}, "headers": {},
	"tags": [sprintf("rev:%d", [data.portcullis.rev])]}
`

// TestPolicyHotReloadUnderLoad: at 500 requests/s, the policy changes ten
// times; no request fails, and every request was decided by exactly one
// revision, which its spend record names.
func TestPolicyHotReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of load")
	}
	rate, total := 500, 2500 // five seconds
	if raceEnabled {
		rate, total = 100, 600
	}
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("gateway.rego", revPolicy)
	write("data.json", `{"portcullis":{"rev":0}}`)
	eng, err := policy.New(config.PolicySettings{Dir: dir, Timeout: 5 * time.Second, Watch: false}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	revs := map[string]int{eng.Status().Revision: 0}
	s := newStackOpts(t, keysConfig, func(o *gateway.Options) { o.Policy = eng.Middleware() })

	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	start := time.Now()
	reloads := make(chan struct{})
	go func() {
		// Ten changes, spread over the run: policy text and data alternate.
		defer close(reloads)
		period := time.Duration(total) * time.Second / time.Duration(rate) / 11
		for i := 1; i <= 10; i++ {
			time.Sleep(period)
			if i%2 == 0 {
				write("gateway.rego", revPolicy+fmt.Sprintf("\n# change %d\n", i))
			}
			write("data.json", fmt.Sprintf(`{"portcullis":{"rev":%d}}`, i))
			if err := eng.Reload(context.Background()); err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			revs[eng.Status().Revision] = i
		}
	}()
	for i := 0; i < total; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			req, _ := http.NewRequest("POST", s.url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+master)
			resp, err := client.Do(req)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Errorf("status %d", resp.StatusCode))
			}
		}()
	}
	wg.Wait()
	<-reloads
	if e := firstErr.Load(); e != nil || failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", failed.Load(), total, e)
	}
	if len(revs) != 11 {
		t.Fatalf("%d revisions, want 11: %v", len(revs), revs)
	}
	if err := s.writer.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, err := s.st.ListSpend(context.Background(), store.SpendFilter{})
	if err != nil || len(recs) != total {
		t.Fatalf("%d spend records, want %d (%v)", len(recs), total, err)
	}
	seen := map[int]int{}
	for _, r := range recs {
		n, ok := revs[r.PolicyVersion]
		if !ok {
			t.Fatalf("record %s: unknown policy version %q", r.RequestID, r.PolicyVersion)
		}
		var tags []string
		for _, tg := range r.Tags {
			if strings.HasPrefix(tg, "rev:") {
				tags = append(tags, tg)
			}
		}
		if len(tags) != 1 || tags[0] != fmt.Sprintf("rev:%d", n) {
			t.Fatalf("record %s: version %s is revision %d, but its decision tags are %v", r.RequestID, r.PolicyVersion, n, r.Tags)
		}
		seen[n]++
	}
	t.Logf("%d requests at %d/s, decided by %d revisions: %v", total, rate, len(seen), seen)
	if len(seen) < 6 {
		t.Fatalf("only %d revisions decided requests; the reloads did not land during the load", len(seen))
	}
}
