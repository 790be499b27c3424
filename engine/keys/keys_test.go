package keys

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/store"
)

// memStore is the part of store.Store the key stage reads.
type memStore struct {
	store.Store
	mu    sync.Mutex
	keys  map[string]*store.Key
	teams map[string]*store.Team
	users map[string]*store.User
	gets  atomic.Int64
}

func newMem() *memStore {
	return &memStore{keys: map[string]*store.Key{}, teams: map[string]*store.Team{}, users: map[string]*store.User{}}
}

func (s *memStore) GetKey(_ context.Context, h string) (*store.Key, error) {
	s.gets.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[h]; ok {
		c := *k
		return &c, nil
	}
	return nil, store.ErrNotFound
}

func (s *memStore) GetTeam(_ context.Context, id string) (*store.Team, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.teams[id]; ok {
		c := *t
		return &c, nil
	}
	return nil, store.ErrNotFound
}

func (s *memStore) GetUser(_ context.Context, id string) (*store.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.users[id]; ok {
		c := *u
		return &c, nil
	}
	return nil, store.ErrNotFound
}

func (s *memStore) add(secret string, k store.Key) *store.Key {
	k.Hash = Hash(secret)
	k.UpdatedAt = time.Now()
	s.mu.Lock()
	s.keys[k.Hash] = &k
	s.mu.Unlock()
	return &k
}

// fixedEstimate prices every request at est nano-dollars.
type fixedEstimate int64

func (f fixedEstimate) Estimate(string, []string, int, int) (int64, int) { return int64(f), 10 }

func i64(v int64) *int64 { return &v }

func exchange(key string) *pipeline.Exchange {
	h := headers{}
	if key != "" {
		h["Authorization"] = []byte("Bearer " + key)
	}
	return &pipeline.Exchange{Ctx: context.Background(), Header: h, Model: "gpt-4o", Body: []byte(`{"model":"gpt-4o"}`)}
}

// headers is a request header set, canonical names to values, read as
// fasthttp's header type is (no allocation per Peek).
type headers map[string][]byte

func (h headers) Peek(k string) []byte { return h[http.CanonicalHeaderKey(k)] }

func ok(x *pipeline.Exchange) error { return nil }

// run serves one request and settles it at cost.
func run(m *Manager, key string, cost int64) error {
	x := exchange(key)
	err := m.Serve(x, ok)
	if x.Settler != nil {
		x.Cost = cost
		x.Settler.Settle(x)
	}
	return err
}

func TestAuthErrors(t *testing.T) {
	st := newMem()
	past := time.Now().Add(-time.Hour)
	st.add("sk-good", store.Key{Models: []string{"gpt-4o", "openai/*"}})
	st.add("sk-blocked", store.Key{Blocked: true})
	st.add("sk-expired", store.Key{ExpiresAt: &past})
	st.add("sk-narrow", store.Key{Models: []string{"claude"}})
	st.teams["t1"] = &store.Team{TeamID: "t1", Blocked: true}
	st.add("sk-blockedteam", store.Key{TeamID: "t1"})
	st.add("sk-ghostteam", store.Key{TeamID: "nope"})
	m, _ := New(Options{Store: st, MasterKey: "sk-master"})
	for _, c := range []struct {
		key    string
		status int
		code   errs.Code
	}{
		{"", 401, errs.CodeUnauthorized},
		{"sk-unknown", 401, errs.CodeUnauthorized},
		{"sk-blocked", 401, errs.CodeUnauthorized},
		{"sk-expired", 401, errs.CodeUnauthorized},
		{"sk-narrow", 403, "model_not_allowed"},
		{"sk-blockedteam", 401, errs.CodeUnauthorized},
		{"sk-ghostteam", 401, errs.CodeUnauthorized},
	} {
		err := run(m, c.key, 0)
		var e *errs.Error
		if !errors.As(err, &e) || e.Status != c.status || e.Code != c.code {
			t.Errorf("%q: %v, want %d %s", c.key, err, c.status, c.code)
		}
	}
	if err := run(m, "sk-good", 0); err != nil {
		t.Fatalf("good key: %v", err)
	}
	if err := run(m, "sk-master", 0); err != nil {
		t.Fatalf("master key: %v", err)
	}
	// Unknown keys are cached as unknown: the store is not hammered.
	m.cache.Wait() // ristretto applies sets asynchronously
	before := st.gets.Load()
	for i := 0; i < 100; i++ {
		_ = run(m, "sk-unknown", 0)
	}
	m.cache.Wait()
	if st.gets.Load()-before > 2 {
		t.Fatalf("unknown key looked up %d times", st.gets.Load()-before)
	}
}

func TestChangesTakeEffectAtOnce(t *testing.T) {
	st := newMem()
	k := st.add("sk-a", store.Key{})
	m, _ := New(Options{Store: st})
	if err := run(m, "sk-a", 0); err != nil {
		t.Fatal(err)
	}
	m.cache.Wait()
	blocked := *k
	blocked.Blocked = true
	blocked.UpdatedAt = time.Now().Add(time.Second)
	m.KeyChanged(&blocked)
	if err := run(m, "sk-a", 0); errs.CodeOf(err) != errs.CodeUnauthorized {
		t.Fatalf("blocked key still works: %v", err)
	}
	m.KeyDeleted(k.Hash)
	if err := run(m, "sk-a", 0); errs.CodeOf(err) != errs.CodeUnauthorized {
		t.Fatalf("deleted key still works: %v", err)
	}
}

// TestBudgetRace: 200 concurrent requests on a key whose budget covers 20
// of them: exactly 20 are admitted when the estimate is exact, the settled
// spend never exceeds the budget, the rest get budget_exceeded. The same
// with the budget on the team.
func TestBudgetRace(t *testing.T) {
	for _, on := range []string{"key", "team", "user"} {
		t.Run(on, func(t *testing.T) {
			st := newMem()
			k := store.Key{}
			switch on {
			case "key":
				k.Limits.MaxBudget = i64(20_000)
			case "team":
				st.teams["t"] = &store.Team{TeamID: "t", Limits: store.Limits{MaxBudget: i64(20_000)}}
				k.TeamID = "t"
			case "user":
				st.users["u"] = &store.User{UserID: "u", Limits: store.Limits{MaxBudget: i64(20_000)}}
				k.UserID = "u"
			}
			st.add("sk-k", k)
			m, _ := New(Options{Store: st, Estimator: fixedEstimate(1000)})
			var admitted, over atomic.Int64
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					err := run(m, "sk-k", 1000)
					switch {
					case err == nil:
						admitted.Add(1)
					case errs.CodeOf(err) == errs.CodeBudgetExceeded:
						over.Add(1)
					default:
						t.Errorf("unexpected %v", err)
					}
				}()
			}
			close(start)
			wg.Wait()
			var a *Account
			switch on {
			case "key":
				a, _ = m.KeyAccount(Hash("sk-k"))
			case "team":
				a, _ = m.TeamAccount("t")
			case "user":
				a, _ = m.UserAccount("u")
			}
			if admitted.Load() != 20 || over.Load() != 180 || a.Spent() != 20_000 || a.Reserved() != 0 {
				t.Fatalf("admitted %d, refused %d, spent %d, reserved %d", admitted.Load(), over.Load(), a.Spent(), a.Reserved())
			}
		})
	}
}

func TestBudgetErrorIsLiteLLMShaped(t *testing.T) {
	st := newMem()
	st.add("sk-k", store.Key{Limits: store.Limits{MaxBudget: i64(10)}})
	m, _ := New(Options{Store: st, Estimator: fixedEstimate(100)})
	err := run(m, "sk-k", 0)
	e := errs.From(err)
	body := string(e.AppendOpenAI(nil))
	if e.Status != 400 || body != `{"error":{"message":"`+e.Message+`","type":"budget_exceeded","param":null,"code":"400"}}` {
		t.Fatalf("%d %s", e.Status, body)
	}
}

// TestRPMExact: a key with rpm_limit 60 under 200 concurrent requests gets
// exactly 60 admitted in the window; the rest get 429 with Retry-After and
// x-ratelimit headers.
func TestRPMExact(t *testing.T) {
	st := newMem()
	st.add("sk-r", store.Key{Limits: store.Limits{RPMLimit: i64(60)}})
	m, _ := New(Options{Store: st})
	var admitted, limited atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := run(m, "sk-r", 0)
			if err == nil {
				admitted.Add(1)
				return
			}
			e := errs.From(err)
			if e.Status != 429 || e.RetryAfter <= 0 || len(e.Headers) == 0 {
				t.Errorf("limited: %+v", e)
			}
			limited.Add(1)
		}()
	}
	close(start)
	wg.Wait()
	if admitted.Load() != 60 || limited.Load() != 140 {
		t.Fatalf("admitted %d, limited %d", admitted.Load(), limited.Load())
	}
}

func TestParallelAndTPM(t *testing.T) {
	st := newMem()
	st.add("sk-p", store.Key{Limits: store.Limits{MaxParallel: i64(2)}})
	m, _ := New(Options{Store: st})
	hold := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := exchange("sk-p")
			_ = m.Serve(x, func(*pipeline.Exchange) error { <-hold; return nil })
			x.Settler.Settle(x)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := run(m, "sk-p", 0); errs.From(err).Status != 429 {
		t.Fatalf("third parallel request: %v", err)
	}
	close(hold)
	wg.Wait()
	if err := run(m, "sk-p", 0); err != nil {
		t.Fatalf("after the others finished: %v", err)
	}
}

func TestBudgetPeriodResets(t *testing.T) {
	st := newMem()
	past := time.Now().Add(-time.Second)
	st.add("sk-d", store.Key{Spend: 5000, Limits: store.Limits{MaxBudget: i64(5000), BudgetDuration: "1h", BudgetResetAt: &past}})
	m, _ := New(Options{Store: st, Estimator: fixedEstimate(100)})
	var resets atomic.Int64
	m.OnReset = func(kind, id string, next time.Time) { resets.Add(1) }
	if err := run(m, "sk-d", 100); err != nil {
		t.Fatalf("the period is over, the budget should be fresh: %v", err)
	}
	a, _ := m.KeyAccount(Hash("sk-d"))
	time.Sleep(20 * time.Millisecond)
	if a.Spent() != 100 || resets.Load() != 1 {
		t.Fatalf("spent %d, resets %d", a.Spent(), resets.Load())
	}
}

func TestParsePeriod(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "1h": time.Hour, "1d": 24 * time.Hour, "30d": 720 * time.Hour, "2w": 336 * time.Hour} {
		p, err := ParsePeriod(in)
		if err != nil || p.Fixed != want {
			t.Errorf("%s: %v %v", in, p, err)
		}
	}
	p, _ := ParsePeriod("monthly")
	if got := p.Next(time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("monthly next: %v", got)
	}
	if _, err := ParsePeriod("soon"); err == nil {
		t.Fatal("bad period accepted")
	}
}

// BenchmarkAuthLimitsReserveSettle: 100,000 keys, cache hit; auth, rate
// limits and budget reserve/settle per request. Run with -cpu 1,2.
func BenchmarkAuthLimitsReserveSettle(b *testing.B) {
	st := newMem()
	const n = 100_000
	secrets := make([]string, n)
	for i := range secrets {
		secrets[i] = fmt.Sprintf("sk-bench-%08d-abcdefghijklmnopqrstuvwxyz", i)
		team := fmt.Sprintf("team-%d", i%100)
		st.add(secrets[i], store.Key{Limits: store.Limits{MaxBudget: i64(1 << 60), RPMLimit: i64(1 << 40), TPMLimit: i64(1 << 50)}, TeamID: team})
		st.teams[team] = &store.Team{TeamID: team, Limits: store.Limits{MaxBudget: i64(1 << 60)}}
	}
	m, _ := New(Options{Store: st, Estimator: fixedEstimate(1000)})
	xs := make([]*pipeline.Exchange, n)
	for i := range xs {
		xs[i] = exchange(secrets[i])
	}
	// Warm the cache: ristretto applies sets asynchronously and may drop
	// some under a burst, so pass over the keys until none misses.
	for pass := 0; pass < 5; pass++ {
		for i := range xs {
			xs[i].Settler = nil
			if err := m.Serve(xs[i], ok); err != nil {
				b.Fatal(err)
			}
			xs[i].Settler.Settle(xs[i])
		}
		m.cache.Wait()
	}
	misses := st.gets.Load()
	var worker atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Each worker walks the keys from its own offset, so the
		// benchmark itself shares no counter between cores.
		i := int(worker.Add(1)) * 50_021
		for pb.Next() {
			i += 7919
			x := xs[i%n]
			x.Settler = nil
			if err := m.Serve(x, ok); err != nil {
				b.Fatal(err)
			}
			x.Cost = 900
			x.Settler.Settle(x)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(st.gets.Load()-misses)/float64(b.N), "store-lookups/op")
}

// TestPrincipalSnapshot: an admitted request carries the key's Principal:
// metadata, limits and budgets (the team's too) read from the cached
// snapshot, the spend from the live account; the same pointer for every
// request of the key, a new one when the key or its team changes, none for
// the master key.
func TestPrincipalSnapshot(t *testing.T) {
	st := newMem()
	reset := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	st.teams["t1"] = &store.Team{TeamID: "t1", Metadata: []byte(`{"cost_center":"cc-7"}`),
		Limits: store.Limits{MaxBudget: i64(5_000_000_000)}}
	k := st.add("sk-p", store.Key{TeamID: "t1", Models: []string{"gpt-4o", "claude-*"}, Metadata: []byte(`{"department":"finance"}`),
		Spend: 1000, Limits: store.Limits{MaxBudget: i64(1_000_000), BudgetDuration: "30d", BudgetResetAt: &reset,
			RPMLimit: i64(60), MaxParallel: i64(4)}})
	st.add("sk-bare", store.Key{})
	m, _ := New(Options{Store: st, MasterKey: "sk-master", Estimator: fixedEstimate(100)})

	x := exchange("sk-p")
	if err := m.Serve(x, ok); err != nil {
		t.Fatal(err)
	}
	p := x.Principal
	if p == nil || string(p.Metadata) != `{"department":"finance"}` || string(p.TeamMetadata) != `{"cost_center":"cc-7"}` ||
		p.RPMLimit != 60 || p.TPMLimit != -1 || p.MaxParallel != 4 || len(p.Models) != 2 || p.Models[1] != "claude-*" {
		t.Fatalf("principal %+v", p)
	}
	if p.Budget.Max != 1_000_000 || p.Budget.Duration != "30d" || p.Budget.Account.Spent() != 1000 ||
		p.Budget.Account.ResetAt() != reset.UnixNano() {
		t.Fatalf("key budget %+v", p.Budget)
	}
	if p.TeamBudget == nil || p.TeamBudget.Max != 5_000_000_000 || p.TeamBudget.Duration != "" || p.TeamBudget.Account.ResetAt() != 0 {
		t.Fatalf("team budget %+v", p.TeamBudget)
	}
	// The spend is the live one: settling moves it.
	x.Cost = 300
	x.Settler.Settle(x)
	if got := p.Budget.Account.Spent(); got != 1300 {
		t.Fatalf("spend after settling: %d, want 1300", got)
	}
	m.cache.Wait()
	y := exchange("sk-p")
	if err := m.Serve(y, ok); err != nil {
		t.Fatal(err)
	}
	if y.Principal != p {
		t.Fatal("a second request of the key built another Principal")
	}
	y.Settler.Settle(y)

	// A team change is seen at once, through a new Principal.
	m.TeamChanged(&store.Team{TeamID: "t1", Metadata: []byte(`{"cost_center":"cc-8"}`)})
	z := exchange("sk-p")
	if err := m.Serve(z, ok); err != nil {
		t.Fatal(err)
	}
	if z.Principal == p || string(z.Principal.TeamMetadata) != `{"cost_center":"cc-8"}` || z.Principal.TeamBudget.Max != -1 {
		t.Fatalf("after the team changed: %+v", z.Principal)
	}
	z.Settler.Settle(z)

	// A key change too.
	changed := *k
	changed.Metadata = []byte(`{"department":"legal"}`)
	changed.UpdatedAt = time.Now().Add(time.Second)
	m.KeyChanged(&changed)
	z = exchange("sk-p")
	if err := m.Serve(z, ok); err != nil {
		t.Fatal(err)
	}
	if string(z.Principal.Metadata) != `{"department":"legal"}` {
		t.Fatalf("after the key changed: %s", z.Principal.Metadata)
	}
	z.Settler.Settle(z)

	// No team, no limits.
	b := exchange("sk-bare")
	if err := m.Serve(b, ok); err != nil {
		t.Fatal(err)
	}
	if bp := b.Principal; bp == nil || bp.TeamBudget != nil || bp.Budget.Max != -1 || bp.RPMLimit != -1 || len(bp.Metadata) != 0 {
		t.Fatalf("bare key: %+v", bp)
	}
	b.Settler.Settle(b)

	mx := exchange("sk-master")
	if err := m.Serve(mx, ok); err != nil || mx.Principal != nil {
		t.Fatalf("master key: %v %+v", err, mx.Principal)
	}
}
