package server

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/spend"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
	"github.com/portcullis/portcullis/engine/testupstream"
)

// TestCostOfCachedAndReasoningTokens: the spend record prices cached and
// reasoning tokens per the table, for OpenAI's and Anthropic's usage
// shapes, streamed and not, and a price set in the config replaces the
// table's.
func TestCostOfCachedAndReasoningTokens(t *testing.T) {
	up, err := testupstream.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	src := `
model_list:
  - model_name: gpt
    litellm_params: {model: openai/gpt-4o-usagedetail, api_key: k, api_base: ` + up.URL() + `/v1}
    model_info: {base_model: gpt-4o}
  - model_name: claude
    litellm_params: {model: anthropic/claude-usagedetail, api_key: k, api_base: ` + up.URL() + `}
    model_info: {base_model: claude-3-5-sonnet}
  - model_name: custom
    litellm_params: {model: openai/gpt-4o-usagedetail, api_key: k, api_base: ` + up.URL() + `/v1, input_cost_per_token: 0.00001, output_cost_per_token: 0.00002}
`
	cfg, err := config.Parse([]byte(src), "cost", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "c.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := spend.NewWriter(st, spend.Options{})
	rt, err := gateway.Build(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Holder: gateway.NewHolder(rt), Spend: w})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = srv.Serve(ln) }()
	defer srv.Shutdown()
	h := &harness{t: t, srv: srv, url: "http://" + ln.Addr().String()}
	defer http.DefaultClient.CloseIdleConnections()

	// Hand-computed from the table (USD per million tokens):
	// gpt-4o: input 2.50, cached 1.25, output 10 (reasoning billed as output):
	//   600 x 2.5 + 400 x 1.25 + 500 x 10 = 1500 + 500 + 5000 = 7000 µ$.
	// claude-3-5-sonnet: input 3, cache read 0.30, cache write 3.75, output 15:
	//   100 x 3 + 1000 x 0.3 + 500 x 3.75 + 50 x 15 = 300 + 300 + 1875 + 750 = 3225 µ$.
	// custom: 10 and 20 per million, cached at the input price:
	//   1000 x 10 + 500 x 20 = 20000 µ$.
	want := map[string]int64{"gpt": 7_000_000, "claude": 3_225_000, "custom": 20_000_000}
	for model, cost := range want {
		for _, stream := range []string{"", `,"stream":true`} {
			resp, b := h.post("/v1/chat/completions", chat(model, stream))
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", model, resp.StatusCode, b)
			}
			// A stream's record is handed to the writer after its last
			// byte (without strict spend): wait for it.
			id := resp.Header.Get("x-request-id")
			var r store.SpendRecord
			for end := time.Now().Add(5 * time.Second); r.RequestID != id && time.Now().Before(end); {
				if err := w.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				recs, err := st.ListSpend(context.Background(), store.SpendFilter{Model: model})
				if err != nil {
					t.Fatal(err)
				}
				for _, rec := range recs {
					if rec.RequestID == id {
						r = rec
					}
				}
				if r.RequestID != id {
					time.Sleep(5 * time.Millisecond)
				}
			}
			if r.RequestID != id || r.Cost != cost {
				t.Errorf("%s stream=%v: cost %d nano, want %d (tokens p%d c%d cached%d write%d reasoning%d)",
					model, stream != "", r.Cost, cost, r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.CacheWriteTokens, r.ReasoningTokens)
			}
		}
	}
	_ = w.Close(context.Background())
}

func TestSpendRecordsStorePromptsOnlyWhenConfigured(t *testing.T) {
	for _, keep := range []bool{false, true} {
		cfg, _ := config.Parse([]byte("model_list:\n  - model_name: m\n    litellm_params: {model: mock/m}\n"), "p", nil)
		st, err := sqlite.Open(filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		w := spend.NewWriter(st, spend.Options{})
		rt, _ := gateway.Build(cfg, gateway.Options{})
		srv := New(Options{Holder: gateway.NewHolder(rt), Spend: w, StorePrompts: keep})
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go func() { _ = srv.Serve(ln) }()
		h := &harness{t: t, srv: srv, url: "http://" + ln.Addr().String()}
		h.post("/v1/chat/completions", chat("m", ""))
		_ = w.Flush(context.Background())
		recs, _ := st.ListSpend(context.Background(), store.SpendFilter{})
		if len(recs) != 1 {
			t.Fatalf("%d records", len(recs))
		}
		got := len(recs[0].Prompt) > 0 && len(recs[0].Response) > 0
		if got != keep {
			t.Fatalf("store_prompts=%v: prompt %q response %q", keep, recs[0].Prompt, recs[0].Response)
		}
		http.DefaultClient.CloseIdleConnections()
		_ = srv.Shutdown()
		_ = w.Close(context.Background())
		_ = st.Close()
	}
}

// A client that reuses its x-request-id still gets one spend record per
// request: records are keyed by the gateway's own id.
func TestRepeatedClientRequestIDKeepsEveryRecord(t *testing.T) {
	cfg, _ := config.Parse([]byte("model_list:\n  - model_name: m\n    litellm_params: {model: mock/m}\n"), "p", nil)
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := spend.NewWriter(st, spend.Options{})
	rt, _ := gateway.Build(cfg, gateway.Options{})
	srv := New(Options{Holder: gateway.NewHolder(rt), Spend: w})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = srv.Serve(ln) }()
	defer srv.Shutdown()
	defer http.DefaultClient.CloseIdleConnections()
	h := &harness{t: t, srv: srv, url: "http://" + ln.Addr().String()}
	for i := 0; i < 3; i++ {
		resp, _ := h.post("/v1/chat/completions", chat("m", ""), "x-request-id", "same-id")
		if resp.Header.Get("x-request-id") != "same-id" || resp.Header.Get("x-portcullis-request-id") == "" {
			t.Fatalf("headers %v", resp.Header)
		}
	}
	_ = w.Close(context.Background())
	recs, _ := st.ListSpend(context.Background(), store.SpendFilter{})
	if len(recs) != 3 {
		t.Fatalf("%d records for 3 requests", len(recs))
	}
}
