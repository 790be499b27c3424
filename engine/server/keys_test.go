package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/admin"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/spend"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// stackHarness is the gateway with storage, keys, spend and admin, on the
// mock provider.
type stackHarness struct {
	*harness
	st     *sqlite.Store
	writer *spend.Writer
	km     *keys.Manager
}

// keysConfig: a mock model priced at 1 µ$ per output token (input free, as
// the mock is in the price table).
const keysConfig = `
model_list:
  - model_name: m
    litellm_params:
      model: mock/m
      output_cost_per_token: 0.000001
general_settings:
  master_key: your-master-key
`

func newStack(t *testing.T) *stackHarness {
	t.Helper()
	return newStackOpts(t, keysConfig, nil)
}

// newStackOpts is newStack with another config and extra gateway stages.
func newStackOpts(t *testing.T, src string, edit func(*gateway.Options)) *stackHarness {
	t.Helper()
	cfg, err := config.Parse([]byte(src), "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := spend.NewWriter(st, spend.Options{})
	var holder *gateway.Holder
	km, err := keys.New(keys.Options{Store: st, MasterKey: "your-master-key", Estimator: estimatorFunc(func(m string, f []string, p, o int) (int64, int) {
		return holder.Current().Router.Estimate(m, f, p, o)
	})})
	if err != nil {
		t.Fatal(err)
	}
	m := telemetry.NewMetrics()
	opts := gateway.Options{Metrics: m, Keys: km}
	if edit != nil {
		edit(&opts)
	}
	rt, err := gateway.Build(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	holder = gateway.NewHolder(rt)
	api := admin.New(admin.Options{Store: st, Keys: km, Audit: w.Audit, Flush: w.Flush, MasterKey: "your-master-key"})
	srv := New(Options{Holder: holder, Metrics: m, Spend: w, Admin: api.Handle, Keys: km})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, url: "http://" + ln.Addr().String(), done: make(chan error, 1)}
	go func() { h.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		// Shutdown waits for client connections to close; the test
		// client's idle keep-alive connections are closed first.
		http.DefaultClient.CloseIdleConnections()
		_ = srv.Shutdown()
		_ = w.Close(context.Background())
		km.Close()
		_ = st.Close()
	})
	return &stackHarness{harness: h, st: st, writer: w, km: km}
}

type estimatorFunc func(string, []string, int, int) (int64, int)

func (f estimatorFunc) Estimate(m string, fb []string, p, o int) (int64, int) { return f(m, fb, p, o) }

const master = "your-master-key"

func (h *stackHarness) admin(path, body string) map[string]any {
	h.t.Helper()
	resp, b := h.post(path, body, "Authorization", "Bearer "+master)
	if resp.StatusCode != 200 {
		h.t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		h.t.Fatalf("%s: %v %s", path, err, b)
	}
	return out
}

// The curl, verbatim, then the key works for chat.
func TestKeyGenerateCurlVerbatim(t *testing.T) {
	h := newStack(t)
	req, _ := http.NewRequest("POST", h.url+"/key/generate",
		strings.NewReader(`{"max_budget": 50.00, "budget_duration": "monthly", "metadata": {"team": "product-engineering"}}`))
	req.Header.Set("Authorization", "Bearer your-master-key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := readAll(resp)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var out struct {
		Key       string
		MaxBudget float64 `json:"max_budget"`
		Duration  string  `json:"budget_duration"`
		Metadata  map[string]any
	}
	if err := json.Unmarshal([]byte(b), &out); err != nil || !strings.HasPrefix(out.Key, "sk-") || out.MaxBudget != 50 ||
		out.Duration != "monthly" || out.Metadata["team"] != "product-engineering" {
		t.Fatalf("generate: %v %s", err, b)
	}
	r, body := h.post("/v1/chat/completions", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+out.Key)
	if r.StatusCode != 200 {
		t.Fatalf("chat with the new key: %d %s", r.StatusCode, body)
	}
	if r, _ := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer sk-not-a-key"); r.StatusCode != 401 {
		t.Fatalf("unknown key: %d", r.StatusCode)
	}
	if err := h.writer.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, err := h.st.ListSpend(context.Background(), store.SpendFilter{KeyHash: keys.Hash(out.Key)})
	if err != nil || len(recs) != 1 || recs[0].Cost != 5000 || recs[0].CompletionTokens != 5 {
		t.Fatalf("spend records: %v %+v", err, recs)
	}
}

// Race test: 200 concurrent requests on a key (then a team) whose budget
// covers 20: exactly 20 are served (the estimate is exact here: output
// max_tokens at the output price), the settled spend equals the budget and
// the other 180 get budget_exceeded.
func TestBudgetRaceThroughGateway(t *testing.T) {
	for _, on := range []string{"key", "team"} {
		t.Run(on, func(t *testing.T) {
			h := newStack(t)
			// Each request: max_tokens 10 at 1 µ$ = 10,000 nano; budget 200,000 nano = 20 requests.
			var key string
			switch on {
			case "key":
				key = h.admin("/key/generate", `{"max_budget": 0.0002}`)["key"].(string)
			case "team":
				h.admin("/team/new", `{"team_id": "t1", "max_budget": 0.0002}`)
				key = h.admin("/key/generate", `{"team_id": "t1"}`)["key"].(string)
			}
			var served, over, other atomic.Int64
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					<-start
					extra := ""
					if i%2 == 0 {
						extra = `,"stream":true`
					}
					body := `{"model":"m","max_tokens":10` + extra + `,"messages":[{"role":"user","content":"one two three four five six seven eight nine ten eleven twelve"}]}`
					req, _ := http.NewRequest("POST", h.url+"/v1/chat/completions", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+key)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						other.Add(1)
						return
					}
					b := readAll(resp)
					switch {
					case resp.StatusCode == 200 && !strings.Contains(b, `"error"`):
						served.Add(1)
					case resp.StatusCode == 400 && strings.Contains(b, `"type":"budget_exceeded"`):
						over.Add(1)
					default:
						other.Add(1)
						t.Logf("%d %s", resp.StatusCode, b)
					}
				}(i)
			}
			t0 := time.Now()
			close(start)
			wg.Wait()
			h.streamsDone()
			t1 := time.Now()
			if err := h.writer.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Logf("requests %v, flush %v", t1.Sub(t0), time.Since(t1))
			recs, _ := h.st.ListSpend(context.Background(), store.SpendFilter{Limit: 1000})
			var total int64
			for _, r := range recs {
				total += r.Cost
			}
			if served.Load() != 20 || over.Load() != 180 || other.Load() != 0 || total != 200_000 || len(recs) != 200 {
				t.Fatalf("served %d, over budget %d, other %d; settled spend %d nano (budget 200000); %d records",
					served.Load(), over.Load(), other.Load(), total, len(recs))
			}
		})
	}
}

// Rate test: rpm_limit 60 under 200 concurrent requests: exactly 60 served.
func TestRPMThroughGateway(t *testing.T) {
	h := newStack(t)
	key := h.admin("/key/generate", `{"rpm_limit": 60}`)["key"].(string)
	var served, limited atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", h.url+"/v1/chat/completions", strings.NewReader(chat("m", "")))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			readAll(resp)
			switch resp.StatusCode {
			case 200:
				served.Add(1)
			case 429:
				if resp.Header.Get("Retry-After") == "" || resp.Header.Get("x-ratelimit-limit-requests") != "60" {
					t.Errorf("429 headers: %v", resp.Header)
				}
				limited.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if served.Load() != 60 || limited.Load() != 140 {
		t.Fatalf("served %d, limited %d", served.Load(), limited.Load())
	}
}

func TestKeyBlockTakesEffectAtOnce(t *testing.T) {
	h := newStack(t)
	key := h.admin("/key/generate", `{}`)["key"].(string)
	if r, _ := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer "+key); r.StatusCode != 200 {
		t.Fatalf("before: %d", r.StatusCode)
	}
	h.admin("/key/block", `{"key": "`+key+`"}`)
	if r, _ := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer "+key); r.StatusCode != 401 {
		t.Fatalf("blocked: %d", r.StatusCode)
	}
	h.admin("/key/unblock", `{"key": "`+key+`"}`)
	if r, _ := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer "+key); r.StatusCode != 200 {
		t.Fatalf("unblocked: %d", r.StatusCode)
	}
	h.admin("/key/delete", `{"keys": ["`+key+`"]}`)
	if r, _ := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer "+key); r.StatusCode != 401 {
		t.Fatalf("deleted: %d", r.StatusCode)
	}
	_ = time.Second
}

func TestRegenerateKeepsSpendAndZeroBudgetRefuses(t *testing.T) {
	h := newStack(t)
	old := h.admin("/key/generate", `{"max_budget": 1}`)["key"].(string)
	if r, b := h.post("/v1/chat/completions", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+old); r.StatusCode != 200 {
		t.Fatalf("%d %s", r.StatusCode, b)
	}
	nk := h.admin("/key/regenerate", `{"key": "`+old+`"}`)["key"].(string)
	if r, _ := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer "+old); r.StatusCode != 401 {
		t.Fatalf("old key after regenerate: %d", r.StatusCode)
	}
	if r, _ := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer "+nk); r.StatusCode != 200 {
		t.Fatalf("new key: %d", r.StatusCode)
	}
	a, ok := h.km.KeyAccount(keys.Hash(nk))
	if !ok || a.Spent() < 5000 {
		t.Fatalf("the spend did not move with the key: %v", a)
	}
	zero := h.admin("/key/generate", `{"max_budget": 0}`)["key"].(string)
	if r, b := h.post("/v1/chat/completions", chat("m", ""), "Authorization", "Bearer "+zero); r.StatusCode != 400 || !strings.Contains(string(b), "budget_exceeded") {
		t.Fatalf("a zero budget must refuse: %d %s", r.StatusCode, b)
	}
}
