// Package sqlite is the embedded store.Store: one SQLite file in WAL mode,
// through modernc.org/sqlite (pure Go, no cgo).
//
// Writes go through a pool holding exactly one connection, so writers queue
// in database/sql (honouring their contexts) instead of racing for the
// SQLite write lock and failing with SQLITE_BUSY; every write transaction
// starts with BEGIN IMMEDIATE. Reads use a separate pool of read-only
// connections, which WAL lets run alongside the writer.
//
// Durability: with the default synchronous=NORMAL a committed transaction
// survives a crash of the process (kill -9), but a power loss or OS crash
// may lose the last transactions committed before it (the database stays
// consistent). Options.Synchronous = "FULL" makes every commit durable
// against power loss too, at the price of an fsync per commit.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/engine/store"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

var _ store.Store = (*Store)(nil)

// Options tune Open. The zero value is the recommended configuration.
type Options struct {
	// Synchronous is SQLite's synchronous pragma: "NORMAL" (default) or
	// "FULL". See the package documentation for what each guarantees.
	Synchronous string
	// BusyTimeout is how long a connection waits on a lock held by another
	// process (or a checkpoint) before failing. Default 5s.
	BusyTimeout time.Duration
	// MaxReadConns is the size of the read pool. Default max(4, GOMAXPROCS).
	MaxReadConns int
}

// Write connection tuning; see Open.
const (
	writeCacheKiB      = 64 << 10 // page cache of the write connection (SQLite's default is 2 MiB)
	walCheckpointPages = 10000    // WAL pages between automatic checkpoints (SQLite's default is 1000)
)

// Store is the SQLite store.Store. Its methods are safe for concurrent use.
type Store struct {
	w *sql.DB // one connection: every write
	r *sql.DB // read-only pool

	insSpend multiStmt    // on w: insertSpendSQL
	addSpend [3]multiStmt // on w: addSpendSQL for keys, teams, users
	insAudit *sql.Stmt    // on w
	getKey   *sql.Stmt    // on r

	spend spendScratch
}

// Open opens (creating if needed) the database file at path and applies
// pending migrations. path is a file name; in-memory databases are not
// supported because the read and write pools must share one database.
func Open(path string, opts Options) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: open %q: want a plain file path", path)
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite: open %q: '?' and '#' are not allowed in the path", path)
	}
	syncMode := strings.ToUpper(opts.Synchronous)
	switch syncMode {
	case "":
		syncMode = "NORMAL"
	case "NORMAL", "FULL", "EXTRA":
	default:
		return nil, fmt.Errorf("sqlite: synchronous %q: want NORMAL or FULL", opts.Synchronous)
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}
	nread := opts.MaxReadConns
	if nread <= 0 {
		nread = max(4, runtime.GOMAXPROCS(0))
	}

	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous("+syncMode+")")
	// The write connection's own settings, each measured with the spend
	// benchmarks (see README.md):
	//   - temp_store(MEMORY): a statement that writes several rows
	//     (WriteSpend inserts up to maxSpendRows per statement) journals the
	//     pages it changes so that it can be undone alone; in memory, not in
	//     a temporary file.
	//   - cache_size: every spend batch touches one leaf page per distinct
	//     key and team in the spend_logs indexes; with many keys the default
	//     2 MiB cache rereads them from the file on every batch.
	//   - wal_autocheckpoint: those pages are rewritten to the WAL by every
	//     batch; checkpointing every 10000 pages (about 40 MiB of WAL) instead
	//     of 1000 copies each hot page back to the database once per many
	//     batches, with fewer fsyncs. Durability is unchanged.
	wq := url.Values{"_pragma": append([]string{"journal_mode(WAL)", "temp_store(MEMORY)",
		"cache_size(" + strconv.Itoa(-writeCacheKiB) + ")", "wal_autocheckpoint(" + strconv.Itoa(walCheckpointPages) + ")"},
		q["_pragma"]...), "_txlock": {"immediate"}}
	rq := url.Values{"_pragma": append([]string{"query_only(1)"}, q["_pragma"]...)}

	w, err := sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w}
	ctx := context.Background()
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: journal_mode is %q, want wal", path, mode)
	}
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(nread)
	r.SetMaxIdleConns(nread)
	r.SetConnMaxLifetime(0)
	s.r = r

	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	return s, nil
}

func (s *Store) prepare(ctx context.Context) error {
	var err error
	if s.insSpend, err = prepareMulti(ctx, s.w, maxSpendRows, insertSpendSQL); err != nil {
		return err
	}
	for i, t := range [3]struct{ table, id string }{{"keys", "hash"}, {"teams", "team_id"}, {"users", "user_id"}} {
		sqlFor := func(n int) string { return addSpendSQL(t.table, t.id, n) }
		if s.addSpend[i], err = prepareMulti(ctx, s.w, maxTotalRows, sqlFor); err != nil {
			return err
		}
		s.spend.totals[i].sum = map[string]int64{}
	}
	s.spend.args = make([]any, max(maxSpendRows*spendArity, maxTotalRows*2))
	if s.insAudit, err = s.w.PrepareContext(ctx, insertAuditSQL); err != nil {
		return err
	}
	if s.getKey, err = s.r.PrepareContext(ctx, "SELECT "+keyColumns+" FROM keys WHERE hash = ?"); err != nil {
		return err
	}
	return nil
}

// Close closes both pools. It does not wait for callers still using the
// store; stop them first.
func (s *Store) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.insAudit, s.getKey} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	errs = append(errs, s.insSpend.close())
	for _, m := range s.addSpend {
		errs = append(errs, m.close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}

// SchemaVersion reports the highest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v)
	return v, err
}

// migrate applies every migration newer than the recorded version, each in
// its own IMMEDIATE transaction. The version is re-read inside the
// transaction, so two processes opening the same file cannot apply one
// migration twice.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER NOT NULL PRIMARY KEY,
	applied_at BIGINT  NOT NULL
)`); err != nil {
		return err
	}
	for v := 1; v <= len(migrations); v++ {
		if err := applyMigration(ctx, db, v); err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
	}
	var cur int
	if err := db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&cur); err != nil {
		return err
	}
	if cur > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary (%d)", cur, len(migrations))
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, v int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", v).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", v, time.Now().UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}
