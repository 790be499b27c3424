package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

func openTest(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "portcullis.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func ptr[T any](v T) *T { return &v }

var t0 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

func TestOpenRejects(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", "a?b"} {
		if _, err := Open(p, Options{}); err == nil {
			t.Errorf("Open(%q): want error", p)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{Synchronous: "sometimes"}); err == nil {
		t.Error("bad synchronous: want error")
	}
}

func TestOpenOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir with space%20", "x%41.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the literal path: %v", err)
	}
}

func TestPragmas(t *testing.T) {
	for _, tc := range []struct {
		opt  string
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{"", 1}, {"full", 2}} {
		s, err := Open(filepath.Join(t.TempDir(), "p.db"), Options{Synchronous: tc.opt})
		if err != nil {
			t.Fatal(err)
		}
		var sync, fk int
		var mode string
		row := s.w.QueryRow("SELECT (SELECT synchronous FROM pragma_synchronous), (SELECT foreign_keys FROM pragma_foreign_keys), (SELECT journal_mode FROM pragma_journal_mode)")
		if err := row.Scan(&sync, &fk, &mode); err != nil {
			t.Fatal(err)
		}
		if sync != tc.want || fk != 1 || mode != "wal" {
			t.Errorf("%q: synchronous=%d foreign_keys=%d journal_mode=%s", tc.opt, sync, fk, mode)
		}
		// The read pool is read-only.
		if _, err := s.r.Exec("DELETE FROM keys"); err == nil {
			t.Error("read pool accepted a write")
		}
		s.Close()
	}
}

func sampleKey(hash string) *store.Key {
	return &store.Key{
		Hash:     hash,
		Prefix:   "sk-" + hash[:4],
		KeyAlias: "alias-" + hash,
		TeamID:   "team-a",
		UserID:   "user-a",
		Models:   []string{"gpt-4o", "claude-*"},
		Limits: store.Limits{
			MaxBudget:      ptr[int64](5 * store.NanoPerUSD),
			SoftBudget:     ptr[int64](4 * store.NanoPerUSD),
			BudgetDuration: "30d",
			BudgetResetAt:  ptr(t0.Add(30 * 24 * time.Hour)),
			RPMLimit:       ptr[int64](60),
			TPMLimit:       ptr[int64](10000),
			MaxParallel:    ptr[int64](4),
			ModelMaxBudget: map[string]int64{"gpt-4o": 1e9},
			ModelRPMLimit:  map[string]int64{"gpt-4o": 10},
			ModelTPMLimit:  map[string]int64{"gpt-4o": 1000},
		},
		ExpiresAt: ptr(t0.Add(time.Hour)),
		Metadata:  json.RawMessage(`{"env":"test"}`),
		CreatedAt: t0,
		UpdatedAt: t0,
		CreatedBy: "master_key",
	}
}

func TestKeyCRUD(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)

	k := sampleKey("aaaa1111")
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, sampleKey("aaaa1111")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate create: %v, want ErrConflict", err)
	}
	got, err := s.GetKey(ctx, k.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, k) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, k)
	}
	if _, err := s.GetKey(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}

	// A minimal key: nil pointers, slices and maps come back nil; times are set.
	bare := &store.Key{Hash: "bbbb2222"}
	if err := s.CreateKey(ctx, bare); err != nil {
		t.Fatal(err)
	}
	if bare.CreatedAt.IsZero() || bare.UpdatedAt.IsZero() {
		t.Fatal("CreatedAt/UpdatedAt not stamped")
	}
	got, err = s.GetKey(ctx, "bbbb2222")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, bare) {
		t.Fatalf("minimal round trip:\n got %+v\nwant %+v", got, bare)
	}

	// Update replaces everything but Spend, CreatedAt and CreatedBy.
	if err := s.WriteSpend(ctx, []store.SpendRecord{{RequestID: "r1", KeyHash: k.Hash, Cost: 7, StartTime: t0}}); err != nil {
		t.Fatal(err)
	}
	upd := &store.Key{Hash: k.Hash, Prefix: "sk-new", KeyAlias: "renamed", Blocked: true, Spend: 999,
		UpdatedAt: t0.Add(time.Minute), CreatedBy: "someone"}
	if err := s.UpdateKey(ctx, upd); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetKey(ctx, k.Hash)
	if err != nil {
		t.Fatal(err)
	}
	want := &store.Key{Hash: k.Hash, Prefix: "sk-new", KeyAlias: "renamed", Blocked: true, Spend: 7,
		CreatedAt: t0, UpdatedAt: t0.Add(time.Minute), CreatedBy: "master_key"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after update:\n got %+v\nwant %+v", got, want)
	}
	if err := s.UpdateKey(ctx, &store.Key{Hash: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}

	// Regenerate.
	if err := s.ReplaceKeyHash(ctx, k.Hash, "bbbb2222", "sk-x"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("replace onto existing: %v", err)
	}
	if err := s.ReplaceKeyHash(ctx, "nope", "cccc3333", "sk-x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("replace missing: %v", err)
	}
	if err := s.ReplaceKeyHash(ctx, k.Hash, "cccc3333", "sk-cccc"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetKey(ctx, k.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old hash still there: %v", err)
	}
	got, err = s.GetKey(ctx, "cccc3333")
	if err != nil {
		t.Fatal(err)
	}
	if got.Prefix != "sk-cccc" || got.KeyAlias != "renamed" || got.Spend != 7 {
		t.Fatalf("after replace: %+v", got)
	}

	if n, err := s.CountKeys(ctx); err != nil || n != 2 {
		t.Fatalf("CountKeys = %d, %v", n, err)
	}
	if err := s.DeleteKey(ctx, "cccc3333"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(ctx, "cccc3333"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestListKeys(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	for i := range 10 {
		k := &store.Key{Hash: fmt.Sprintf("h%02d", i), TeamID: []string{"t1", "t2"}[i%2], UserID: []string{"u1", "u2", "u3"}[i%3],
			CreatedAt: t0.Add(time.Duration(i) * time.Second)}
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	hashes := func(ks []*store.Key) []string {
		var out []string
		for _, k := range ks {
			out = append(out, k.Hash)
		}
		return out
	}
	for _, tc := range []struct {
		team, user    string
		offset, limit int
		want          []string
		total         int
	}{
		{"", "", 0, 0, []string{"h00", "h01", "h02", "h03", "h04", "h05", "h06", "h07", "h08", "h09"}, 10},
		{"", "", 2, 3, []string{"h02", "h03", "h04"}, 10},
		{"t1", "", 0, 0, []string{"h00", "h02", "h04", "h06", "h08"}, 5},
		{"t1", "u1", 0, 0, []string{"h00", "h06"}, 2},
		{"", "u2", 1, 1, []string{"h04"}, 3},
		{"zz", "", 0, 0, nil, 0},
	} {
		ks, total, err := s.ListKeys(ctx, tc.team, tc.user, tc.offset, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := hashes(ks); !reflect.DeepEqual(got, tc.want) || total != tc.total {
			t.Errorf("ListKeys(%q,%q,%d,%d) = %v,%d want %v,%d", tc.team, tc.user, tc.offset, tc.limit, got, total, tc.want, tc.total)
		}
	}
}

func TestTeamCRUD(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	tm := &store.Team{
		TeamID: "team-a", TeamAlias: "A", Models: []string{"gpt-4o"},
		Limits:    store.Limits{MaxBudget: ptr[int64](100), BudgetDuration: "monthly", RPMLimit: ptr[int64](5)},
		Members:   []store.Member{{UserID: "u1", Role: "admin"}, {UserEmail: "b@example.com", Role: "user"}},
		Metadata:  json.RawMessage(`{"cost_center":42}`),
		CreatedAt: t0, UpdatedAt: t0,
	}
	if err := s.CreateTeam(ctx, tm); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTeam(ctx, &store.Team{TeamID: "team-a"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := s.GetTeam(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, tm) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, tm)
	}
	if _, err := s.GetTeam(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	tm.TeamAlias, tm.Blocked, tm.Members, tm.UpdatedAt = "A2", true, nil, t0.Add(time.Hour)
	if err := s.UpdateTeam(ctx, tm); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetTeam(ctx, "team-a")
	if !reflect.DeepEqual(got, tm) {
		t.Fatalf("after update:\n got %+v\nwant %+v", got, tm)
	}
	if err := s.UpdateTeam(ctx, &store.Team{TeamID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.CreateTeam(ctx, &store.Team{TeamID: "team-b", CreatedAt: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	ts, err := s.ListTeams(ctx)
	if err != nil || len(ts) != 2 || ts[0].TeamID != "team-a" || ts[1].TeamID != "team-b" {
		t.Fatalf("ListTeams = %v, %v", ts, err)
	}
	if err := s.DeleteTeam(ctx, "team-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTeam(ctx, "team-b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
}

func TestUserCRUD(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	u := &store.User{UserID: "u1", UserEmail: "a@example.com", UserRole: "internal_user",
		Models: []string{"*"}, TeamIDs: []string{"team-a", "team-b"},
		Limits:    store.Limits{TPMLimit: ptr[int64](1000), ModelRPMLimit: map[string]int64{"m": 1}},
		CreatedAt: t0, UpdatedAt: t0}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, &store.User{UserID: "u1"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := s.GetUser(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, u) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, u)
	}
	if _, err := s.GetUser(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	u.UserRole, u.TeamIDs, u.UpdatedAt = "proxy_admin", nil, t0.Add(time.Hour)
	if err := s.UpdateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetUser(ctx, "u1")
	if !reflect.DeepEqual(got, u) {
		t.Fatalf("after update:\n got %+v\nwant %+v", got, u)
	}
	if err := s.UpdateUser(ctx, &store.User{UserID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	us, err := s.ListUsers(ctx)
	if err != nil || len(us) != 1 {
		t.Fatalf("ListUsers = %v, %v", us, err)
	}
}

// seedOwners creates key k1 (team t1, user u1), key k2 (team t1, user u2),
// team t1 and users u1, u2.
func seedOwners(t testing.TB, s *Store) {
	t.Helper()
	ctx := context.Background()
	for _, k := range []*store.Key{{Hash: "k1", TeamID: "t1", UserID: "u1"}, {Hash: "k2", TeamID: "t1", UserID: "u2"}} {
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateTeam(ctx, &store.Team{TeamID: "t1"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"u1", "u2"} {
		if err := s.CreateUser(ctx, &store.User{UserID: id}); err != nil {
			t.Fatal(err)
		}
	}
}

type totals struct{ k1, k2, t1, u1, u2 int64 }

func readTotals(t testing.TB, s *Store) totals {
	t.Helper()
	ctx := context.Background()
	var out totals
	for _, c := range []struct {
		dst *int64
		get func() (int64, error)
	}{
		{&out.k1, func() (int64, error) { k, err := s.GetKey(ctx, "k1"); return spendOf(k, err) }},
		{&out.k2, func() (int64, error) { k, err := s.GetKey(ctx, "k2"); return spendOf(k, err) }},
		{&out.t1, func() (int64, error) { x, err := s.GetTeam(ctx, "t1"); return spendOf(x, err) }},
		{&out.u1, func() (int64, error) { x, err := s.GetUser(ctx, "u1"); return spendOf(x, err) }},
		{&out.u2, func() (int64, error) { x, err := s.GetUser(ctx, "u2"); return spendOf(x, err) }},
	} {
		v, err := c.get()
		if err != nil {
			t.Fatal(err)
		}
		*c.dst = v
	}
	return out
}

func spendOf(x any, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	switch v := x.(type) {
	case *store.Key:
		return v.Spend, nil
	case *store.Team:
		return v.Spend, nil
	case *store.User:
		return v.Spend, nil
	}
	return 0, nil
}

func TestWriteSpendTotalsIdempotent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	seedOwners(t, s)
	batch := []store.SpendRecord{
		{RequestID: "r1", KeyHash: "k1", TeamID: "t1", UserID: "u1", Cost: 100, StartTime: t0},
		{RequestID: "r2", KeyHash: "k1", TeamID: "t1", UserID: "u1", Cost: 20, StartTime: t0},
		{RequestID: "r3", KeyHash: "k2", TeamID: "t1", UserID: "u2", Cost: 3, StartTime: t0},
		{RequestID: "r4", KeyHash: "gone", Cost: 50, StartTime: t0}, // unknown key: logged, no total
	}
	if err := s.WriteSpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	want := totals{k1: 120, k2: 3, t1: 123, u1: 120, u2: 3}
	if got := readTotals(t, s); got != want {
		t.Fatalf("totals %+v, want %+v", got, want)
	}
	// The same batch again, and a batch overlapping it: nothing counts twice.
	if err := s.WriteSpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSpend(ctx, []store.SpendRecord{
		{RequestID: "r1", KeyHash: "k1", TeamID: "t1", UserID: "u1", Cost: 100, StartTime: t0},
		{RequestID: "r5", KeyHash: "k1", TeamID: "t1", UserID: "u1", Cost: 1, StartTime: t0},
		{RequestID: "r5", KeyHash: "k1", TeamID: "t1", UserID: "u1", Cost: 1, StartTime: t0}, // twice in one batch
	}); err != nil {
		t.Fatal(err)
	}
	want = totals{k1: 121, k2: 3, t1: 124, u1: 121, u2: 3}
	if got := readTotals(t, s); got != want {
		t.Fatalf("totals after replays %+v, want %+v", got, want)
	}
	if recs, _ := s.ListSpend(ctx, store.SpendFilter{}); len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}

	// Atomicity: a batch with a bad record writes nothing.
	err := s.WriteSpend(ctx, []store.SpendRecord{{RequestID: "r6", KeyHash: "k1", Cost: 1}, {KeyHash: "k1", Cost: 1}})
	if err == nil {
		t.Fatal("record without request id accepted")
	}
	// A cancelled context rolls back.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.WriteSpend(cctx, []store.SpendRecord{{RequestID: "r7", KeyHash: "k1", Cost: 1}}); err == nil {
		t.Fatal("cancelled write succeeded")
	}
	if got := readTotals(t, s); got != want {
		t.Fatalf("totals after failed writes %+v, want %+v", got, want)
	}
	if recs, _ := s.ListSpend(ctx, store.SpendFilter{}); len(recs) != 5 {
		t.Fatalf("%d records after failed writes, want 5", len(recs))
	}

	// Reset.
	next := t0.Add(24 * time.Hour)
	if err := s.ResetSpend(ctx, "key", "k1", next); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetSpend(ctx, "team", "t1", next); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetSpend(ctx, "user", "u1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetSpend(ctx, "user", "nope", next); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reset missing: %v", err)
	}
	if err := s.ResetSpend(ctx, "org", "x", next); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if got := readTotals(t, s); got != (totals{k2: 3, u2: 3}) {
		t.Fatalf("after reset %+v", got)
	}
	k, _ := s.GetKey(ctx, "k1")
	if k.Limits.BudgetResetAt == nil || !k.Limits.BudgetResetAt.Equal(next) {
		t.Fatalf("key reset at %v, want %v", k.Limits.BudgetResetAt, next)
	}
	u, _ := s.GetUser(ctx, "u1")
	if u.Limits.BudgetResetAt != nil {
		t.Fatalf("user reset at %v, want nil", u.Limits.BudgetResetAt)
	}
}

func TestConcurrentWriteSpend(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	seedOwners(t, s)
	const writers, batches, per = 8, 10, 50
	var wg sync.WaitGroup
	var want totals
	var mu sync.Mutex
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local totals
			for b := range batches {
				recs := make([]store.SpendRecord, per)
				for i := range recs {
					cost := int64(w*1000 + b*100 + i + 1)
					recs[i] = store.SpendRecord{RequestID: fmt.Sprintf("w%d-b%d-%d", w, b, i), KeyHash: "k1", TeamID: "t1", UserID: "u1", Cost: cost, StartTime: t0}
					local.k1 += cost
				}
				if err := s.WriteSpend(ctx, recs); err != nil {
					t.Error(err)
					return
				}
				// Readers run alongside the writer.
				if _, err := s.GetKey(ctx, "k1"); err != nil {
					t.Error(err)
					return
				}
			}
			mu.Lock()
			want.k1 += local.k1
			mu.Unlock()
		}()
	}
	wg.Wait()
	want.t1, want.u1 = want.k1, want.k1
	if got := readTotals(t, s); got != want {
		t.Fatalf("totals %+v, want %+v", got, want)
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "re.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	seedOwners(t, s)
	if err := s.WriteSpend(ctx, []store.SpendRecord{{RequestID: "r1", KeyHash: "k1", TeamID: "t1", UserID: "u1", Cost: 42, StartTime: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAudit(ctx, []store.AuditRecord{{At: t0, Action: "key.generate", ObjectType: "key", ObjectID: "k1"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err = Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if v, err := s.SchemaVersion(ctx); err != nil || v != len(migrations) {
			t.Fatalf("schema version %d, %v", v, err)
		}
		var n int
		if err := s.r.QueryRow("SELECT COUNT(*) FROM schema_migrations").Scan(&n); err != nil || n != len(migrations) {
			t.Fatalf("%d migration rows, %v", n, err)
		}
		if got := readTotals(t, s); got != (totals{k1: 42, t1: 42, u1: 42}) {
			t.Fatalf("totals after reopen %+v", got)
		}
		if recs, err := s.ListSpend(ctx, store.SpendFilter{}); err != nil || len(recs) != 1 {
			t.Fatalf("spend after reopen %v, %v", recs, err)
		}
		if recs, err := s.ListAudit(ctx, "key", "k1", 0); err != nil || len(recs) != 1 {
			t.Fatalf("audit after reopen %v, %v", recs, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path, Options{}); err == nil {
		t.Fatal("opened a database from a newer binary")
	}
}

func TestListSpendFilters(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	full := store.SpendRecord{
		RequestID: "full", KeyHash: "k1", KeyAlias: "alias", TeamID: "t1", UserID: "u1", Model: "gpt-4o",
		ModelGroup: "gpt-4o", Deployment: "azure-1", Provider: "azure", PromptTokens: 10, CompletionTokens: 20,
		CachedTokens: 3, CacheWriteTokens: 4, ReasoningTokens: 5, Cost: 123, Status: 200, ErrorCode: "",
		StartTime: t0.Add(5 * time.Minute), EndTime: t0.Add(5*time.Minute + 1500*time.Millisecond), CacheHit: true,
		Tags: []string{"a", "b"}, Prompt: json.RawMessage(`[{"role":"user"}]`), Response: json.RawMessage(`{"x":1}`),
	}
	recs := []store.SpendRecord{
		full,
		{RequestID: "a", KeyHash: "k1", TeamID: "t1", UserID: "u1", Model: "m1", Cost: 1, StartTime: t0},
		{RequestID: "b", KeyHash: "k2", TeamID: "t1", UserID: "u2", Model: "m1", Cost: 2, StartTime: t0.Add(time.Minute)},
		{RequestID: "c", KeyHash: "k2", TeamID: "t2", UserID: "u2", Model: "m2", Cost: 3, StartTime: t0.Add(2 * time.Minute)},
		{RequestID: "d", KeyHash: "k3", TeamID: "t2", UserID: "u3", Model: "m2", Cost: 4, StartTime: t0.Add(3 * time.Minute), Status: 429, ErrorCode: "rate_limited"},
	}
	if err := s.WriteSpend(ctx, recs); err != nil {
		t.Fatal(err)
	}
	ids := func(rs []store.SpendRecord) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.RequestID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    store.SpendFilter
		want []string
	}{
		{"all newest first", store.SpendFilter{}, []string{"full", "d", "c", "b", "a"}},
		{"limit", store.SpendFilter{Limit: 2}, []string{"full", "d"}},
		{"key", store.SpendFilter{KeyHash: "k2"}, []string{"c", "b"}},
		{"team", store.SpendFilter{TeamID: "t2"}, []string{"d", "c"}},
		{"user", store.SpendFilter{UserID: "u1"}, []string{"full", "a"}},
		{"model", store.SpendFilter{Model: "m1"}, []string{"b", "a"}},
		{"from inclusive", store.SpendFilter{From: t0.Add(time.Minute)}, []string{"full", "d", "c", "b"}},
		{"to exclusive", store.SpendFilter{To: t0.Add(2 * time.Minute)}, []string{"b", "a"}},
		{"combined", store.SpendFilter{TeamID: "t1", Model: "m1", From: t0.Add(time.Second)}, []string{"b"}},
		{"none", store.SpendFilter{KeyHash: "zz"}, nil},
	} {
		got, err := s.ListSpend(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ids(got), tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, ids(got), tc.want)
		}
	}
	got, _ := s.ListSpend(ctx, store.SpendFilter{Limit: 1})
	if !reflect.DeepEqual(got[0], full) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got[0], full)
	}
}

func TestSpendReport(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	day1 := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	recs := []store.SpendRecord{
		{RequestID: "1", KeyHash: "k1", KeyAlias: "a1", TeamID: "t1", Model: "m1", PromptTokens: 1, CompletionTokens: 2, Cost: 10, StartTime: day1},
		{RequestID: "2", KeyHash: "k1", KeyAlias: "a1", TeamID: "t1", Model: "m1", PromptTokens: 3, CompletionTokens: 4, Cost: 20, StartTime: day1.Add(23*time.Hour + 59*time.Minute)},
		{RequestID: "3", KeyHash: "k1", KeyAlias: "a1", TeamID: "t1", Model: "m2", PromptTokens: 5, CompletionTokens: 6, Cost: 30, StartTime: day1.Add(time.Hour)},
		{RequestID: "4", KeyHash: "k2", KeyAlias: "a2", TeamID: "t2", Model: "m1", PromptTokens: 7, CompletionTokens: 8, Cost: 40, StartTime: day1.Add(2 * time.Hour)},
		{RequestID: "5", KeyHash: "k1", KeyAlias: "a1", TeamID: "t1", Model: "m1", PromptTokens: 9, CompletionTokens: 10, Cost: 50, StartTime: day2},
		// Local time zones do not move a record to another day.
		{RequestID: "6", KeyHash: "k1", KeyAlias: "a1", TeamID: "t1", Model: "m1", Cost: 60, StartTime: day2.Add(time.Hour).In(time.FixedZone("x", -5*3600))},
	}
	if err := s.WriteSpend(ctx, recs); err != nil {
		t.Fatal(err)
	}
	got, err := s.SpendReport(ctx, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ReportRow{
		{Day: "2025-03-10", TeamID: "t1", KeyHash: "k1", KeyAlias: "a1", Model: "m1", Requests: 2, PromptTokens: 4, CompletionTokens: 6, Cost: 30},
		{Day: "2025-03-10", TeamID: "t1", KeyHash: "k1", KeyAlias: "a1", Model: "m2", Requests: 1, PromptTokens: 5, CompletionTokens: 6, Cost: 30},
		{Day: "2025-03-10", TeamID: "t2", KeyHash: "k2", KeyAlias: "a2", Model: "m1", Requests: 1, PromptTokens: 7, CompletionTokens: 8, Cost: 40},
		{Day: "2025-03-11", TeamID: "t1", KeyHash: "k1", KeyAlias: "a1", Model: "m1", Requests: 2, PromptTokens: 9, CompletionTokens: 10, Cost: 110},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("report:\n got %+v\nwant %+v", got, want)
	}
	got, err = s.SpendReport(ctx, day2, day2.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want[3:]) {
		t.Fatalf("bounded report:\n got %+v\nwant %+v", got, want[3:])
	}
}

func TestAudit(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	recs := []store.AuditRecord{
		{ID: "a1", At: t0, Actor: "master_key", Action: "key.generate", ObjectType: "key", ObjectID: "k1", After: json.RawMessage(`{"alias":"x"}`)},
		{ID: "a2", At: t0.Add(time.Second), Actor: "master_key", Action: "key.update", ObjectType: "key", ObjectID: "k1", Before: json.RawMessage(`{"alias":"x"}`), After: json.RawMessage(`{"alias":"y"}`)},
		{At: t0.Add(2 * time.Second), Action: "team.new", ObjectType: "team", ObjectID: "t1"},
	}
	if err := s.WriteAudit(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if recs[2].ID == "" {
		t.Fatal("no id assigned")
	}
	if err := s.WriteAudit(ctx, recs); err != nil { // replay: ignored
		t.Fatal(err)
	}
	all, err := s.ListAudit(ctx, "", "", 0)
	if err != nil || len(all) != 3 || all[0].ObjectType != "team" {
		t.Fatalf("ListAudit all = %+v, %v", all, err)
	}
	got, err := s.ListAudit(ctx, "key", "k1", 1)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], recs[1]) {
		t.Fatalf("ListAudit key k1 = %+v, %v", got, err)
	}
}
