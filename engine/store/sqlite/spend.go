package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

const spendColumns = "request_id, key_hash, key_alias, team_id, user_id, model, model_group, deployment, provider, " +
	"prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost, status, error_code, " +
	"start_time, end_time, cache_hit, tags, prompt, response, policy_version, saved_cost"

// spendArity is the number of columns (bind parameters) per spend record.
const spendArity = 25

// maxSpendRows is the most records one INSERT statement carries. A
// statement writing several rows keeps a statement journal (in memory, see
// temp_store in Open) of the pages it changes, so fewer, larger statements
// copy fewer pages; 64 x 25 = 1600 parameters stays far below the limits of
// SQLite (32766) and PostgreSQL (65535).
const maxSpendRows = 64

// maxTotalRows is the most ids one UPDATE of spend totals carries.
const maxTotalRows = 64

// spendRowSQL is one record's VALUES row, in spendColumns order. Text
// columns other than request_id are bound as NULL when empty (binding NULL
// is much cheaper for the driver than binding a string) and stored as the
// column's empty value; COALESCE means the same in PostgreSQL.
const spendRowSQL = "(?,COALESCE(?,''),COALESCE(?,''),COALESCE(?,''),COALESCE(?,''),COALESCE(?,''),COALESCE(?,''),COALESCE(?,''),COALESCE(?,'')," +
	"?,?,?,?,?,?,?,COALESCE(?,''),?,?,?,COALESCE(?,'[]'),?,?,COALESCE(?,''),?)"

// insertSpendSQL inserts n records, each unless its request_id is already
// there (ON CONFLICT DO NOTHING is SQLite's INSERT OR IGNORE for that
// constraint, spelled the way PostgreSQL accepts too); RowsAffected counts
// the rows actually inserted.
func insertSpendSQL(n int) string {
	return "INSERT INTO spend_logs (" + spendColumns + ") VALUES " + repeatRow(spendRowSQL, n) +
		" ON CONFLICT (request_id) DO NOTHING"
}

// addSpendSQL adds n amounts to the spend of n distinct ids of table,
// whose key column is idCol: UPDATE ... FROM, which SQLite (3.33+) and
// PostgreSQL both have, over a VALUES list, whose columns both databases
// name column1, column2. The CAST gives PostgreSQL the parameter's type.
func addSpendSQL(table, idCol string, n int) string {
	return "UPDATE " + table + " SET spend = spend + v.column2 FROM (VALUES " + repeatRow("(?,CAST(? AS BIGINT))", n) +
		") AS v WHERE " + table + "." + idCol + " = v.column1"
}

// repeatRow is n copies of row, comma separated.
func repeatRow(row string, n int) string {
	var b strings.Builder
	b.Grow(n * (len(row) + 1))
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	return b.String()
}

// multiStmt is one statement prepared for maxRows, maxRows/2, ..., 1 rows
// (maxRows a power of two). rows[k] is how many rows stmts[k] takes.
type multiStmt struct {
	stmts []*sql.Stmt
	rows  []int
}

// prepareMulti prepares sqlFor(n) for n = maxRows, maxRows/2, ..., 1 on db.
func prepareMulti(ctx context.Context, db *sql.DB, maxRows int, sqlFor func(n int) string) (multiStmt, error) {
	var m multiStmt
	for n := maxRows; n >= 1; n /= 2 {
		st, err := db.PrepareContext(ctx, sqlFor(n))
		if err != nil {
			m.close()
			return multiStmt{}, err
		}
		m.stmts = append(m.stmts, st)
		m.rows = append(m.rows, n)
	}
	return m, nil
}

func (m multiStmt) close() error {
	var errs []error
	for _, st := range m.stmts {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// each covers n rows with chunks, the largest statement first and then the
// binary decomposition of what is left (300 rows with maxRows 64 are
// 4x64, 32, 8 and 4), calling fn with each chunk's statement in tx, its
// first row and its row count.
func (m multiStmt) each(ctx context.Context, tx *sql.Tx, n int, fn func(st *sql.Stmt, from, rows int) error) error {
	from := 0
	for k, rows := range m.rows {
		if n-from < rows {
			continue
		}
		st := tx.StmtContext(ctx, m.stmts[k])
		for ; n-from >= rows; from += rows {
			if err := fn(st, from, rows); err != nil {
				return err
			}
		}
	}
	return nil
}

// errReplayed means a batch's fast path met a request id that was already
// stored (or repeated within the batch); the batch is then written again,
// in a new transaction, one record at a time.
var errReplayed = errors.New("sqlite: batch holds a stored request id")

// WriteSpend inserts recs and adds the cost of each newly inserted record
// to its key, team and user totals, in one transaction. A record whose
// RequestID is already stored is skipped and not counted again, so
// retrying a batch is safe. Every record needs a RequestID.
func (s *Store) WriteSpend(ctx context.Context, recs []store.SpendRecord) error {
	return s.WriteBatch(ctx, recs, nil)
}

// WriteBatch is WriteSpend and WriteAudit in one transaction (the spend
// writer's group commit). Both parts are idempotent.
//
// The records are inserted many per statement, and every statement must
// insert all of its rows; the totals are then summed from the records. If
// one inserts fewer (a replayed batch, or a request id twice in the batch),
// the transaction is rolled back and the batch written again one record at
// a time, counting only the records each insert reports as new.
func (s *Store) WriteBatch(ctx context.Context, recs []store.SpendRecord, audit []store.AuditRecord) error {
	if len(recs) == 0 && len(audit) == 0 {
		return nil
	}
	for i := range recs {
		if recs[i].RequestID == "" {
			return fmt.Errorf("sqlite: write spend: record %d has no request id", i)
		}
	}
	for i := range audit {
		if audit[i].ID == "" {
			audit[i].ID = newID()
		}
	}
	err := s.writeBatch(ctx, recs, audit, false)
	if errors.Is(err, errReplayed) {
		err = s.writeBatch(ctx, recs, audit, true)
	}
	return err
}

// writeBatch runs one transaction; oneByOne selects the exact path.
func (s *Store) writeBatch(ctx context.Context, recs []store.SpendRecord, audit []store.AuditRecord, oneByOne bool) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: write spend: %w", err)
	}
	defer tx.Rollback()
	if err := s.writeSpendTx(ctx, tx, recs, oneByOne); err != nil {
		return fmt.Errorf("sqlite: write spend: %w", err)
	}
	if err := s.writeAuditTx(ctx, tx, audit); err != nil {
		return fmt.Errorf("sqlite: write audit: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: write spend: commit: %w", err)
	}
	return nil
}

// spendScratch is writeSpendTx's reusable memory. Write transactions are
// serialized by the single write connection, so its mutex is uncontended.
type spendScratch struct {
	mu     sync.Mutex
	args   []any            // arguments of one statement
	totals [3]totalsPending // key, team, user
}

// totalsPending is the spend to add per id of one table.
type totalsPending struct {
	sum map[string]int64
	ids []string // sum's keys, once summing is done
}

func (t *totalsPending) add(id string, cost int64) {
	if id != "" {
		t.sum[id] += cost
	}
}

// add counts r towards its key, team and user totals.
func (sc *spendScratch) add(r *store.SpendRecord) {
	if r.Cost == 0 {
		return
	}
	sc.totals[0].add(r.KeyHash, r.Cost)
	sc.totals[1].add(r.TeamID, r.Cost)
	sc.totals[2].add(r.UserID, r.Cost)
}

// reset empties the scratch, dropping references to the last batch's
// strings (prompts included).
func (sc *spendScratch) reset() {
	clear(sc.args)
	for i := range sc.totals {
		clear(sc.totals[i].sum)
		clear(sc.totals[i].ids)
		sc.totals[i].ids = sc.totals[i].ids[:0]
	}
}

// spendArgs writes r's column values, in spendColumns order, to dst (see
// spendRowSQL). Integers are passed as int64, which database/sql hands to
// the driver without conversion.
func spendArgs(dst []any, r *store.SpendRecord) {
	_ = dst[spendArity-1]
	dst[0] = r.RequestID
	dst[1] = textOrNull(r.KeyHash)
	dst[2] = textOrNull(r.KeyAlias)
	dst[3] = textOrNull(r.TeamID)
	dst[4] = textOrNull(r.UserID)
	dst[5] = textOrNull(r.Model)
	dst[6] = textOrNull(r.ModelGroup)
	dst[7] = textOrNull(r.Deployment)
	dst[8] = textOrNull(r.Provider)
	dst[9] = r.PromptTokens
	dst[10] = r.CompletionTokens
	dst[11] = r.CachedTokens
	dst[12] = r.CacheWriteTokens
	dst[13] = r.ReasoningTokens
	dst[14] = r.Cost
	dst[15] = int64(r.Status)
	dst[16] = textOrNull(r.ErrorCode)
	dst[17] = ms(r.StartTime)
	dst[18] = ms(r.EndTime)
	dst[19] = int64(boolInt(r.CacheHit))
	if len(r.Tags) == 0 {
		dst[20] = nil
	} else {
		dst[20] = jsonText(r.Tags)
	}
	dst[21] = rawOrNull(r.Prompt)
	dst[22] = rawOrNull(r.Response)
	dst[23] = textOrNull(r.PolicyVersion)
	dst[24] = r.SavedCost
}

// textOrNull is s, or NULL when empty (see spendRowSQL).
func textOrNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// writeSpendTx inserts recs and adds the new ones to the totals. With
// oneByOne false it returns errReplayed as soon as an insert statement
// skips a row; with oneByOne true it never does.
func (s *Store) writeSpendTx(ctx context.Context, tx *sql.Tx, recs []store.SpendRecord, oneByOne bool) error {
	if len(recs) == 0 {
		return nil
	}
	sc := &s.spend
	sc.mu.Lock()
	defer sc.mu.Unlock()
	defer sc.reset()

	if oneByOne {
		ins := tx.StmtContext(ctx, s.insSpend.stmts[len(s.insSpend.stmts)-1]) // one row
		args := sc.args[:spendArity]
		for i := range recs {
			r := &recs[i]
			spendArgs(args, r)
			res, err := ins.ExecContext(ctx, args...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n == 1 { // 0: the request id is stored already
				sc.add(r)
			}
		}
	} else {
		err := s.insSpend.each(ctx, tx, len(recs), func(ins *sql.Stmt, from, rows int) error {
			args := sc.args[:rows*spendArity]
			for j := range rows {
				spendArgs(args[j*spendArity:], &recs[from+j])
			}
			res, err := ins.ExecContext(ctx, args...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n != int64(rows) {
				return errReplayed
			}
			for j := range rows {
				sc.add(&recs[from+j])
			}
			return nil
		})
		if err != nil {
			return err
		}
	}

	// Totals are summed per id first, so a batch costs a few UPDATEs per
	// table, each for up to maxTotalRows distinct ids.
	for i := range sc.totals {
		t := &sc.totals[i]
		if len(t.sum) == 0 {
			continue
		}
		for id := range t.sum {
			t.ids = append(t.ids, id)
		}
		err := s.addSpend[i].each(ctx, tx, len(t.ids), func(st *sql.Stmt, from, rows int) error {
			args := sc.args[:2*rows]
			for j, id := range t.ids[from : from+rows] {
				args[2*j], args[2*j+1] = id, t.sum[id]
			}
			_, err := st.ExecContext(ctx, args...)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ResetSpend sets the spend of a "key", "team" or "user" to zero and its
// budget_reset_at to nextReset (NULL when zero), in one statement.
func (s *Store) ResetSpend(ctx context.Context, kind, id string, nextReset time.Time) error {
	var q string
	switch kind {
	case "key":
		q = "UPDATE keys SET spend = 0, budget_reset_at = ?, updated_at = ? WHERE hash = ?"
	case "team":
		q = "UPDATE teams SET spend = 0, budget_reset_at = ?, updated_at = ? WHERE team_id = ?"
	case "user":
		q = "UPDATE users SET spend = 0, budget_reset_at = ?, updated_at = ? WHERE user_id = ?"
	default:
		return fmt.Errorf("sqlite: reset spend: unknown kind %q", kind)
	}
	var next any
	if !nextReset.IsZero() {
		next = nextReset.UnixMilli()
	}
	res, err := s.w.ExecContext(ctx, q, next, time.Now().UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("sqlite: reset spend: %w", err)
	}
	return notFoundUnlessOne(res)
}

// ListSpend returns the records matching f, newest first. From is
// inclusive and To exclusive; Limit <= 0 means no limit.
func (s *Store) ListSpend(ctx context.Context, f store.SpendFilter) ([]store.SpendRecord, error) {
	var (
		conds []string
		args  []any
	)
	eq := func(col, v string) {
		if v != "" {
			conds = append(conds, col+" = ?")
			args = append(args, v)
		}
	}
	eq("key_hash", f.KeyHash)
	eq("team_id", f.TeamID)
	eq("user_id", f.UserID)
	eq("model", f.Model)
	if !f.From.IsZero() {
		conds = append(conds, "start_time >= ?")
		args = append(args, f.From.UnixMilli())
	}
	if !f.To.IsZero() {
		conds = append(conds, "start_time < ?")
		args = append(args, f.To.UnixMilli())
	}
	q := "SELECT " + spendColumns + " FROM spend_logs"
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY start_time DESC, request_id DESC"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list spend: %w", err)
	}
	defer rows.Close()
	var out []store.SpendRecord
	for rows.Next() {
		var (
			r                store.SpendRecord
			start, end       int64
			cacheHit         int
			tags             string
			prompt, response sql.NullString
		)
		if err := rows.Scan(&r.RequestID, &r.KeyHash, &r.KeyAlias, &r.TeamID, &r.UserID, &r.Model, &r.ModelGroup,
			&r.Deployment, &r.Provider, &r.PromptTokens, &r.CompletionTokens, &r.CachedTokens, &r.CacheWriteTokens,
			&r.ReasoningTokens, &r.Cost, &r.Status, &r.ErrorCode, &start, &end, &cacheHit, &tags,
			&prompt, &response, &r.PolicyVersion, &r.SavedCost); err != nil {
			return nil, fmt.Errorf("sqlite: list spend: %w", err)
		}
		r.StartTime = fromMS(start)
		r.EndTime = fromMS(end)
		r.CacheHit = cacheHit != 0
		if r.Tags, err = fromStrList(tags); err != nil {
			return nil, fmt.Errorf("sqlite: list spend: %s: tags: %w", r.RequestID, err)
		}
		r.Prompt = fromNullRaw(prompt)
		r.Response = fromNullRaw(response)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list spend: %w", err)
	}
	return out, nil
}

const msPerDay = 24 * 60 * 60 * 1000

// SpendReport sums spend per UTC day, team, key, key alias and model for
// records with from <= start_time < to (a zero bound is open), ordered by
// those columns.
func (s *Store) SpendReport(ctx context.Context, from, to time.Time) ([]store.ReportRow, error) {
	var (
		conds []string
		args  []any
	)
	if !from.IsZero() {
		conds = append(conds, "start_time >= ?")
		args = append(args, from.UnixMilli())
	}
	if !to.IsZero() {
		conds = append(conds, "start_time < ?")
		args = append(args, to.UnixMilli())
	}
	// The day is an integer division, which PostgreSQL computes the same way.
	q := "SELECT start_time / 86400000 AS day, team_id, key_hash, key_alias, model, COUNT(*), " +
		"COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost), 0) FROM spend_logs"
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " GROUP BY day, team_id, key_hash, key_alias, model ORDER BY day, team_id, key_hash, key_alias, model"
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: spend report: %w", err)
	}
	defer rows.Close()
	var out []store.ReportRow
	for rows.Next() {
		var (
			r   store.ReportRow
			day int64
		)
		if err := rows.Scan(&day, &r.TeamID, &r.KeyHash, &r.KeyAlias, &r.Model, &r.Requests,
			&r.PromptTokens, &r.CompletionTokens, &r.Cost); err != nil {
			return nil, fmt.Errorf("sqlite: spend report: %w", err)
		}
		r.Day = time.UnixMilli(day * msPerDay).UTC().Format("2006-01-02")
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: spend report: %w", err)
	}
	return out, nil
}
