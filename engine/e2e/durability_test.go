//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
)

// durabilityConfig serves a mock model slowly enough that requests are in
// flight when the gateway is stopped.
const durabilityConfig = `model_list:
  - model_name: m
    litellm_params:
      model: mock/m
      mock_latency: 2ms
      output_cost_per_token: 0.000001
general_settings:
  master_key: sk-durable
portcullis:
  spend:
    flush_interval: 100ms
  log:
    level: warn
`

// answer is one request that got a response.
type answer struct {
	id string
	at time.Time
}

// load sends requests from 8 workers until stop is closed or the gateway
// stops answering, and returns those that got a 200.
func load(url string, stop <-chan struct{}) []answer {
	var mu sync.Mutex
	var out []answer
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", url+"/v1/chat/completions",
					strings.NewReader(`{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"durable"}]}`))
				req.Header.Set("Authorization", "Bearer sk-durable")
				resp, err := client.Do(req)
				if err != nil {
					return // the gateway is gone
				}
				_, _ = ioReadAll(resp)
				if resp.StatusCode == 200 {
					mu.Lock()
					out = append(out, answer{resp.Header.Get("x-request-id"), time.Now()})
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return out
}

func ioReadAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	var out []byte
	for {
		n, err := resp.Body.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, nil
		}
	}
}

func records(t *testing.T, dir string) map[string]int {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(dir, "portcullis.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.ListSpend(context.Background(), store.SpendFilter{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range recs {
		out[r.RequestID]++
	}
	return out
}

func binary(t *testing.T) string {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	bin := filepath.Join(root, "bin", "portcullis")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not found: run `make build` first", bin)
	}
	return bin
}

// TestDurabilitySIGTERM: under load, SIGTERM, then restart: every request
// that got an answer has exactly one spend record.
func TestDurabilitySIGTERM(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.yaml", durabilityConfig)
	g := startGatewayIn(t, bin, "durable", cfg, nil, dir)
	stop := make(chan struct{})
	done := make(chan []answer)
	go func() { done <- load(g.url, stop) }()
	time.Sleep(1500 * time.Millisecond)
	g.stop(t) // SIGTERM, exit 0 within 10 s
	close(stop)
	answered := <-done
	if len(answered) < 100 {
		t.Fatalf("only %d requests answered under load", len(answered))
	}
	g2 := startGatewayIn(t, bin, "durable-restarted", cfg, nil, dir)
	g2.stop(t)
	recs := records(t, dir)
	for _, a := range answered {
		if recs[a.id] != 1 {
			t.Fatalf("request %s answered but has %d spend records", a.id, recs[a.id])
		}
	}
	t.Logf("%d answered, %d records, all accounted for", len(answered), len(recs))
}

// TestDurabilityKill9: under load, kill -9, then restart: the answered
// requests without a record all fall within the flush window before the
// kill (100 ms, plus the commit that was in flight: 250 ms of slack on a
// loaded 2-core machine).
func TestDurabilityKill9(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.yaml", durabilityConfig)
	g := startGatewayIn(t, bin, "kill9", cfg, nil, dir)
	stop := make(chan struct{})
	done := make(chan []answer)
	go func() { done <- load(g.url, stop) }()
	time.Sleep(1500 * time.Millisecond)
	killedAt := time.Now()
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g.done
	close(stop)
	answered := <-done
	g2 := startGatewayIn(t, bin, "kill9-restarted", cfg, nil, dir)
	g2.stop(t)
	recs := records(t, dir)
	const window = 100*time.Millisecond + 250*time.Millisecond
	missing := 0
	for _, a := range answered {
		if recs[a.id] == 1 {
			continue
		}
		if recs[a.id] > 1 {
			t.Fatalf("request %s has %d records", a.id, recs[a.id])
		}
		missing++
		if age := killedAt.Sub(a.at); age > window {
			t.Fatalf("request %s answered %v before the kill has no spend record (window %v)", a.id, age, window)
		}
	}
	t.Logf("%d answered, %d missing after kill -9, all within %v of the kill", len(answered), missing, window)
}
