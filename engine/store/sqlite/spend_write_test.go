package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/portcullis/portcullis/engine/store"
)

// TestWriteSpendChunks writes batches whose sizes cross the multi-row
// statements' boundaries, replays parts of them (a record already stored
// sits in the middle of a chunk), repeats a request id inside a batch, and
// spreads the totals over more ids than one UPDATE carries.
func TestWriteSpendChunks(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	seedOwners(t, s)
	const nKeys = 2*maxTotalRows + 3 // three UPDATE statements for keys
	for i := range nKeys {
		if err := s.CreateKey(ctx, &store.Key{Hash: "x" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(i int) store.SpendRecord {
		r := store.SpendRecord{RequestID: "r" + strconv.Itoa(i), KeyHash: "x" + strconv.Itoa(i%nKeys), Cost: int64(i + 1), StartTime: t0}
		switch i % 3 {
		case 0:
			r.KeyHash, r.TeamID, r.UserID = "k1", "t1", "u1"
		case 1:
			r.Tags, r.KeyAlias, r.ErrorCode = []string{"a"}, "alias", "e"
		}
		return r
	}
	want := map[string]int64{} // key -> spend
	var wantK1, wantT1, wantU1 int64
	count := func(r store.SpendRecord) {
		want[r.KeyHash] += r.Cost
		if r.TeamID == "t1" {
			wantT1 += r.Cost
		}
		if r.UserID == "u1" {
			wantU1 += r.Cost
		}
	}
	batch := func(from, to int) []store.SpendRecord {
		var out []store.SpendRecord
		for i := from; i < to; i++ {
			out = append(out, rec(i))
		}
		return out
	}

	// 300 = 4x64 + 32 + 8 + 4 rows; then 1 and 127 rows.
	for _, b := range [][2]int{{0, 300}, {300, 301}, {301, 428}} {
		recs := batch(b[0], b[1])
		if err := s.WriteSpend(ctx, recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			count(r)
		}
	}
	// Replays: 200 stored records around 100 new ones, in one batch.
	recs := append(batch(250, 350), batch(428, 528)...)
	recs = append(recs, batch(350, 428)...)
	if err := s.WriteSpend(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range batch(428, 528) {
		count(r)
	}
	// A request id twice in a batch: its first record counts.
	dup := batch(528, 600)
	twice := dup[10]
	twice.Cost = 1_000_000
	dup = append(dup, twice)
	if err := s.WriteSpend(ctx, dup); err != nil {
		t.Fatal(err)
	}
	for _, r := range dup[:len(dup)-1] {
		count(r)
	}
	wantK1 = want["k1"]

	if got := readTotals(t, s); got.k1 != wantK1 || got.t1 != wantT1 || got.u1 != wantU1 || got.k2 != 0 || got.u2 != 0 {
		t.Fatalf("totals %+v, want k1=%d t1=%d u1=%d", got, wantK1, wantT1, wantU1)
	}
	for i := range nKeys {
		id := "x" + strconv.Itoa(i)
		k, err := s.GetKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if k.Spend != want[id] {
			t.Fatalf("key %s spend %d, want %d", id, k.Spend, want[id])
		}
	}
	got, err := s.ListSpend(ctx, store.SpendFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 600 {
		t.Fatalf("%d records, want 600", len(got))
	}
	byID := map[string]store.SpendRecord{}
	for _, r := range got {
		byID[r.RequestID] = r
	}
	for i := range 600 {
		w := rec(i)
		if g := byID[w.RequestID]; g.KeyHash != w.KeyHash || g.Cost != w.Cost || g.KeyAlias != w.KeyAlias ||
			g.ErrorCode != w.ErrorCode || len(g.Tags) != len(w.Tags) || g.TeamID != w.TeamID {
			t.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
	}
}

// TestMigrationDropsSpendIndexes opens a database made by the first schema
// version, holding spend, with the current binary.
func TestMigrationDropsSpendIndexes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	// A version-1 database, written the way version 1 stored spend (the
	// current binary cannot open it without migrating).
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	all := migrations
	migrations = all[:1]
	err = migrate(ctx, db)
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO spend_logs (request_id, key_hash, user_id, model, cost, start_time, end_time) VALUES ('r1','k1','u','m',5,?,?)", t0.UnixMilli(), t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	want := spendIndexes(t, db)
	db.Close()

	if len(want) != 6 { // the primary key's, start_time, key, team, user, model
		t.Fatalf("version 1 indexes %v", want)
	}

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, err := s.ListSpend(ctx, store.SpendFilter{})
	if err != nil || len(recs) != 1 || recs[0].Cost != 5 || recs[0].PolicyVersion != "" || recs[0].SavedCost != 0 {
		t.Fatalf("version-1 record after migrating: %+v, %v", recs, err)
	}
	if v, _ := s.SchemaVersion(ctx); v != len(migrations) {
		t.Fatalf("version %d, want %d", v, len(migrations))
	}
	got := spendIndexes(t, s.r)
	delete(want, "spend_logs_user_id_start_time")
	delete(want, "spend_logs_model_start_time")
	if len(got) != len(want) {
		t.Fatalf("indexes %v, want %v", got, want)
	}
	for ix := range want {
		if !got[ix] {
			t.Fatalf("indexes %v, want %v", got, want)
		}
	}
	// The old record is there, the user and model filters still work, and
	// the replayed record is not counted again.
	if err := s.CreateKey(ctx, &store.Key{Hash: "k1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSpend(ctx, []store.SpendRecord{{RequestID: "r1", KeyHash: "k1", Cost: 5, StartTime: t0}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []store.SpendFilter{{UserID: "u"}, {Model: "m"}, {KeyHash: "k1"}} {
		if recs, err := s.ListSpend(ctx, f); err != nil || len(recs) != 1 {
			t.Fatalf("%+v: %v, %v", f, recs, err)
		}
	}
	if k, _ := s.GetKey(ctx, "k1"); k.Spend != 0 {
		t.Fatalf("key spend %d, want 0 (the replayed record was stored before)", k.Spend)
	}
}

func spendIndexes(t *testing.T, db *sql.DB) map[string]bool {
	t.Helper()
	rows, err := db.Query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spend_logs'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		out[name] = true
	}
	return out
}

// TestWriterPragmas checks the write connection's own settings.
func TestWriterPragmas(t *testing.T) {
	s, _ := openTest(t)
	var temp, cache, ckpt int
	for _, p := range []struct {
		name string
		dst  *int
	}{{"temp_store", &temp}, {"cache_size", &cache}, {"wal_autocheckpoint", &ckpt}} {
		if err := s.w.QueryRow("PRAGMA " + p.name).Scan(p.dst); err != nil {
			t.Fatal(err)
		}
	}
	if temp != 2 || cache != -writeCacheKiB || ckpt != walCheckpointPages {
		t.Fatalf("temp_store=%d cache_size=%d wal_autocheckpoint=%d", temp, cache, ckpt)
	}
}
