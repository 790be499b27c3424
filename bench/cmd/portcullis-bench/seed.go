package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
)

// benchSecret is the i-th seeded key (0 ≤ i < 10^9): deterministic, so the
// load generator can send any of them without reading them back.
func benchSecret(i int) string { return fmt.Sprintf("sk-bench-%09d", i) }

// seedPrefix is what the admin API stores besides the hash for a key of
// this length (its first 3 and last 2 characters).
func seedPrefix(secret string) string { return secret[:3] + "..." + secret[len(secret)-2:] }

// seedKeys inserts the keys benchSecret(from) … benchSecret(to-1) into the
// SQLite file at path (created and migrated if needed) through the store
// the gateway uses, one CreateKey each (the store has no batch insert). A
// key that exists already is skipped.
func seedKeys(path string, from, to int, progress func(done int)) error {
	st, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	now := time.Now()
	for i := from; i < to; i++ {
		s := benchSecret(i)
		k := &store.Key{Hash: keys.Hash(s), Prefix: seedPrefix(s), CreatedAt: now, UpdatedAt: now, CreatedBy: "portcullis-bench"}
		if err := st.CreateKey(ctx, k); err != nil && !errors.Is(err, store.ErrConflict) {
			_ = st.Close()
			return fmt.Errorf("key %d: %w", i, err)
		}
		if progress != nil && (i+1-from)%50000 == 0 {
			progress(i + 1 - from)
		}
	}
	return st.Close()
}

// seedKeysBulk does what seedKeys does, faster: the store writes the
// first key (and creates the schema), then that row is copied for every
// other key with only hash and prefix changed, in transactions of 20,000
// rows over one database/sql connection to the same file. It names no
// column besides hash and prefix (the others are read from the table), so
// every row is the store's own encoding of the same key.
func seedKeysBulk(path string, from, to int, progress func(done int)) error {
	if from >= to {
		return nil
	}
	if err := seedKeys(path, from, from+1, nil); err != nil {
		return err
	}
	tmpl := keys.Hash(benchSecret(from))
	q := url.Values{"_pragma": {"busy_timeout(5000)", "journal_mode(WAL)", "synchronous(NORMAL)", "cache_size(-262144)", "temp_store(MEMORY)"}, "_txlock": {"immediate"}}
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	rows, err := db.QueryContext(ctx, "SELECT name FROM pragma_table_info('keys')")
	if err != nil {
		return err
	}
	var others []string
	seen := map[string]bool{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return err
		}
		seen[c] = true
		if c != "hash" && c != "prefix" {
			others = append(others, c)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()
	if !seen["hash"] || !seen["prefix"] {
		return errors.New("table keys has no hash or prefix column")
	}
	cols := strings.Join(others, ", ")
	// One statement inserts up to per rows: (VALUES (hash, prefix), …)
	// joined with the template row.
	const per = 500
	insert := func(n int) string {
		var b strings.Builder
		b.WriteString("INSERT INTO keys (hash, prefix, " + cols + ") SELECT v.column1, v.column2, " + prefixed("t.", others) + " FROM (VALUES ")
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?,?)")
		}
		b.WriteString(") AS v, keys AS t WHERE t.hash = ? ON CONFLICT DO NOTHING")
		return b.String()
	}
	// In hash order, every insert appends to the table and its indexes
	// instead of landing on a random page: several times faster at 10^6.
	type row struct{ hash, secret string }
	todo := make([]row, 0, to-from-1)
	for i := from + 1; i < to; i++ {
		s := benchSecret(i)
		todo = append(todo, row{keys.Hash(s), s})
	}
	slices.SortFunc(todo, func(a, b row) int { return strings.Compare(a.hash, b.hash) })
	const batch = 20000
	var args []any
	for lo := 0; lo < len(todo); lo += batch {
		hi := min(lo+batch, len(todo))
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for c := lo; c < hi; c += per {
			rs := todo[c:min(c+per, hi)]
			args = args[:0]
			for _, r := range rs {
				args = append(args, r.hash, seedPrefix(r.secret))
			}
			args = append(args, tmpl)
			if _, err := tx.ExecContext(ctx, insert(len(rs)), args...); err != nil {
				_ = tx.Rollback()
				return fmt.Errorf("keys %s…: %w", rs[0].secret, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		if progress != nil {
			progress(hi + 1)
		}
	}
	return nil
}

func prefixed(p string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = p + c
	}
	return strings.Join(out, ", ")
}

// countKeys is the number of keys in the SQLite file at path.
func countKeys(path string) (int, error) {
	st, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	return st.CountKeys(context.Background())
}

func serveSeedKeys(args []string) int {
	fs := flag.NewFlagSet("seed-keys", flag.ContinueOnError)
	db := fs.String("db", "", "the gateway's SQLite file (created if missing)")
	n := fs.Int("n", 1000, "keys to have: sk-bench-000000000 … sk-bench-<n-1>")
	bulk := fs.Bool("bulk", true, "copy the first key's row in large transactions instead of one CreateKey per key")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *db == "" || *n <= 0 || *n > 1e9 {
		fmt.Fprintln(os.Stderr, "seed-keys: want -db FILE and 0 < -n ≤ 10^9")
		return 2
	}
	// Keys already there (a previous, interrupted seed) are counted as
	// done: the store has only the seeded keys, numbered from 0.
	have, err := countKeys(*db)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed-keys:", err)
		return 1
	}
	start := time.Now()
	seed := seedKeys
	if *bulk {
		seed = seedKeysBulk
	}
	err = seed(*db, min(have, *n), *n, func(done int) {
		fmt.Fprintf(os.Stderr, "seed-keys: %d keys in %v\n", done, time.Since(start).Round(time.Millisecond))
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed-keys:", err)
		return 1
	}
	el := time.Since(start)
	added := *n - min(have, *n)
	fmt.Printf("seeded %d keys (%d were there) into %s in %v (%s per key)\n", added, min(have, *n), *db,
		el.Round(time.Millisecond), perKey(el, added))
	return 0
}

func perKey(el time.Duration, n int) string {
	if n == 0 {
		return "—"
	}
	return strconv.FormatFloat(float64(el.Microseconds())/float64(n), 'f', 1, 64) + " µs"
}
