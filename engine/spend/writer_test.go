package spend_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/spend"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
)

var t0 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "spend.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.CreateKey(ctx, &store.Key{Hash: "k1", TeamID: "t1", UserID: "u1"}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTeam(ctx, &store.Team{TeamID: "t1"}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(ctx, &store.User{UserID: "u1"}); err != nil {
		t.Fatal(err)
	}
	return st
}

func rec(id string, cost int64) store.SpendRecord {
	return store.SpendRecord{RequestID: id, KeyHash: "k1", TeamID: "t1", UserID: "u1", Model: "m", Cost: cost, StartTime: t0}
}

// checkTotals asserts the key, team and user totals and the record count.
func checkTotals(t *testing.T, st store.Store, wantCost int64, wantRecords int) {
	t.Helper()
	ctx := context.Background()
	k, err := st.GetKey(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	tm, err := st.GetTeam(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.GetUser(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend != wantCost || tm.Spend != wantCost || u.Spend != wantCost {
		t.Errorf("spend key=%d team=%d user=%d, want %d", k.Spend, tm.Spend, u.Spend, wantCost)
	}
	recs, err := st.ListSpend(ctx, store.SpendFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != wantRecords {
		t.Errorf("%d records, want %d", len(recs), wantRecords)
	}
}

func closeWriter(t *testing.T, w *spend.Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentAdd(t *testing.T) {
	st := openStore(t)
	w := spend.NewWriter(st, spend.Options{FlushInterval: 5 * time.Millisecond, MaxBatch: 64})
	const goroutines, per = 8, 500
	var wg sync.WaitGroup
	var sum atomic.Int64
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				cost := int64(g*per + i + 1)
				sum.Add(cost)
				w.Add(rec(fmt.Sprintf("g%d-%d", g, i), cost))
			}
		}()
	}
	wg.Wait()
	closeWriter(t, w)
	checkTotals(t, st, sum.Load(), goroutines*per)
	s := w.Stats()
	if s.Written != goroutines*per || s.Queued != 0 || s.InFlight != 0 || s.FailedBatches != 0 || s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAddSyncVisible(t *testing.T) {
	st := openStore(t)
	// An hour-long interval: AddSync must not wait for it.
	w := spend.NewWriter(st, spend.Options{FlushInterval: time.Hour})
	defer closeWriter(t, w)
	ctx := context.Background()
	w.Add(rec("async", 1)) // queued before, committed with it (group commit)
	for i := range 20 {
		id := fmt.Sprintf("sync-%d", i)
		if err := w.AddSync(ctx, rec(id, 2)); err != nil {
			t.Fatal(err)
		}
		recs, err := st.ListSpend(ctx, store.SpendFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != i+2 {
			t.Fatalf("after AddSync %s: %d records visible, want %d", id, len(recs), i+2)
		}
	}
	checkTotals(t, st, 41, 21)
}

func TestAddSyncConcurrentGroupCommit(t *testing.T) {
	st := openStore(t)
	w := spend.NewWriter(st, spend.Options{FlushInterval: time.Hour})
	defer closeWriter(t, w)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if err := w.AddSync(ctx, rec(fmt.Sprintf("g%d-%d", g, i), 1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	checkTotals(t, st, 320, 320)
	if s := w.Stats(); s.Batches > 320 {
		t.Fatalf("%d batches for 320 records", s.Batches)
	}
}

func TestFlushAndInterval(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	w := spend.NewWriter(st, spend.Options{FlushInterval: time.Hour})
	w.Add(rec("a", 5))
	w.Audit(store.AuditRecord{At: t0, Action: "key.update", ObjectType: "key", ObjectID: "k1"})
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkTotals(t, st, 5, 1)
	if a, err := st.ListAudit(ctx, "key", "k1", 0); err != nil || len(a) != 1 || a[0].ID == "" {
		t.Fatalf("audit %+v, %v", a, err)
	}
	if err := w.Flush(ctx); err != nil { // nothing queued
		t.Fatal(err)
	}
	closeWriter(t, w)

	// Without Flush, the interval commits.
	w = spend.NewWriter(st, spend.Options{FlushInterval: 10 * time.Millisecond})
	defer closeWriter(t, w)
	w.Add(rec("b", 7))
	deadline := time.Now().Add(5 * time.Second)
	for w.Stats().Written < 1 {
		if time.Now().After(deadline) {
			t.Fatal("interval did not commit")
		}
		time.Sleep(time.Millisecond)
	}
	checkTotals(t, st, 12, 2)
}

func TestMaxBatch(t *testing.T) {
	st := openStore(t)
	w := spend.NewWriter(st, spend.Options{FlushInterval: time.Hour, MaxBatch: 512})
	for i := range 1000 {
		w.Add(rec(fmt.Sprint(i), 1))
	}
	closeWriter(t, w)
	// One full batch, then the rest at Close.
	if s := w.Stats(); s.Batches != 2 || s.Written != 1000 {
		t.Fatalf("stats %+v, want 2 batches", s)
	}
	checkTotals(t, st, 1000, 1000)
}

func TestCloseFlushesEverything(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	w := spend.NewWriter(st, spend.Options{FlushInterval: time.Hour, MaxBatch: 100})
	for i := range 1000 {
		w.Add(rec(fmt.Sprint(i), 3))
		if i%10 == 0 {
			w.Audit(store.AuditRecord{At: t0, Action: "x", ObjectType: "key", ObjectID: "k1"})
		}
	}
	closeWriter(t, w)
	closeWriter(t, w) // idempotent
	checkTotals(t, st, 3000, 1000)
	if a, _ := st.ListAudit(ctx, "", "", 0); len(a) != 100 {
		t.Fatalf("%d audit records, want 100", len(a))
	}

	// After Close: Add is dropped and counted, AddSync says so, Flush is fine.
	w.Add(rec("late", 1))
	w.Audit(store.AuditRecord{Action: "late"})
	if err := w.AddSync(ctx, rec("late-sync", 1)); !errors.Is(err, spend.ErrClosed) {
		t.Fatalf("AddSync after Close: %v", err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Dropped != 3 {
		t.Fatalf("dropped %d, want 3", s.Dropped)
	}
	checkTotals(t, st, 3000, 1000)
}

var errInjected = errors.New("injected failure")

// flaky fails the first failSpend WriteSpend and failAudit WriteAudit
// calls. It hides the store's WriteBatch, so the writer takes the two-call
// path.
type flaky struct {
	store.Store
	mu                   sync.Mutex
	failSpend, failAudit int
	spendCalls           int
}

func (f *flaky) WriteSpend(ctx context.Context, recs []store.SpendRecord) error {
	f.mu.Lock()
	f.spendCalls++
	fail := f.failSpend > 0
	if fail {
		f.failSpend--
	}
	f.mu.Unlock()
	if fail {
		return errInjected
	}
	return f.Store.WriteSpend(ctx, recs)
}

func (f *flaky) WriteAudit(ctx context.Context, recs []store.AuditRecord) error {
	f.mu.Lock()
	fail := f.failAudit > 0
	if fail {
		f.failAudit--
	}
	f.mu.Unlock()
	if fail {
		return errInjected
	}
	return f.Store.WriteAudit(ctx, recs)
}

func TestFailingStoreLosesNothing(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	// Three failed spend writes, then two audit failures after their spend
	// part committed: the retries must not count that spend twice.
	fl := &flaky{Store: st, failSpend: 3, failAudit: 2}
	w := spend.NewWriter(fl, spend.Options{FlushInterval: time.Millisecond, MaxBatch: 50, RetryBackoff: time.Millisecond})
	var sum int64
	for i := range 1000 {
		sum += int64(i)
		w.Add(rec(fmt.Sprint(i), int64(i)))
		if i%100 == 0 {
			w.Audit(store.AuditRecord{At: t0, Action: "x", ObjectType: "key", ObjectID: "k1"})
		}
	}
	closeWriter(t, w)
	checkTotals(t, st, sum, 1000)
	if a, _ := st.ListAudit(ctx, "", "", 0); len(a) != 10 {
		t.Fatalf("%d audit records, want 10", len(a))
	}
	s := w.Stats()
	if s.FailedBatches != 5 || s.Retries != 5 || s.Written != 1000 || s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAddSyncReportsFailure(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	fl := &flaky{Store: st, failSpend: 1}
	w := spend.NewWriter(fl, spend.Options{FlushInterval: time.Hour, RetryBackoff: time.Millisecond})
	defer closeWriter(t, w)
	if err := w.AddSync(ctx, rec("r", 9)); !errors.Is(err, errInjected) {
		t.Fatalf("AddSync: %v, want the injected error", err)
	}
	// The record stayed queued and the retry commits it.
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkTotals(t, st, 9, 1)
}

// gated blocks every WriteSpend until open is closed.
type gated struct {
	store.Store
	open    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (g *gated) WriteSpend(ctx context.Context, recs []store.SpendRecord) error {
	g.once.Do(func() { close(g.entered) })
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Store.WriteSpend(ctx, recs)
}

func TestQueueFullBlocks(t *testing.T) {
	st := openStore(t)
	g := &gated{Store: st, open: make(chan struct{}), entered: make(chan struct{})}
	w := spend.NewWriter(g, spend.Options{FlushInterval: time.Millisecond, MaxBatch: 5, QueueSize: 10})
	w.Add(rec("first", 1))
	<-g.entered // the goroutine holds "first" in a stuck transaction
	added := make(chan struct{})
	go func() {
		for i := range 20 {
			w.Add(rec(fmt.Sprint(i), 1))
		}
		close(added)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for w.Stats().QueueFull == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Add never blocked")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-added:
		t.Fatal("20 Adds fit in a queue of 10")
	default:
	}
	if s := w.Stats(); s.Queued != 10 || s.InFlight != 1 {
		t.Fatalf("stats while blocked %+v", s)
	}
	close(g.open)
	<-added
	closeWriter(t, w)
	checkTotals(t, st, 21, 21)
}

func TestCloseGivesUp(t *testing.T) {
	st := openStore(t)
	fl := &flaky{Store: st, failSpend: 1 << 30}
	w := spend.NewWriter(fl, spend.Options{FlushInterval: time.Millisecond, RetryBackoff: time.Millisecond, MaxRetryBackoff: 5 * time.Millisecond})
	for i := range 10 {
		w.Add(rec(fmt.Sprint(i), 1))
	}
	syncErr := make(chan error, 1)
	go func() { syncErr <- w.AddSync(context.Background(), rec("s", 1)) }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := w.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v", err)
	}
	if err := <-syncErr; err == nil {
		t.Fatal("AddSync succeeded on a failing store")
	}
	if s := w.Stats(); s.Dropped != 11 || s.Written != 0 {
		t.Fatalf("stats %+v", s)
	}
	checkTotals(t, st, 0, 0)
}

var _ spend.BatchStore = (*sqlite.Store)(nil)

func TestAddCopiesBuffers(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	w := spend.NewWriter(st, spend.Options{FlushInterval: time.Hour})
	defer closeWriter(t, w)
	body := []byte(`tag-one {"p":1}`)
	r := rec("copy", 1)
	r.Tags = []string{string(body[:7])}
	r.Prompt = body[8:]
	w.Add(r)
	r.Tags[0] = "mutated"
	copy(body, "XXXXXXXXXXXXXXX") // the request buffer is reused
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := st.ListSpend(ctx, store.SpendFilter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("%v, %v", got, err)
	}
	if len(got[0].Tags) != 1 || got[0].Tags[0] != "tag-one" || string(got[0].Prompt) != `{"p":1}` {
		t.Fatalf("stored tags %q prompt %s", got[0].Tags, got[0].Prompt)
	}
}
