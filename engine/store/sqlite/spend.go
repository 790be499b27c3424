package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

const spendColumns = "request_id, key_hash, key_alias, team_id, user_id, model, model_group, deployment, provider, " +
	"prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost, status, error_code, " +
	"start_time, end_time, cache_hit, tags, prompt, response"

// insertSpendSQL inserts one record unless its request_id is already there
// (ON CONFLICT DO NOTHING is SQLite's INSERT OR IGNORE for that constraint,
// spelled the way PostgreSQL accepts too); RowsAffected says which.
const insertSpendSQL = "INSERT INTO spend_logs (" + spendColumns + ") VALUES (" +
	"?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (request_id) DO NOTHING"

// WriteSpend inserts recs and adds the cost of each newly inserted record
// to its key, team and user totals, in one transaction. A record whose
// RequestID is already stored is skipped and not counted again, so
// retrying a batch is safe. Every record needs a RequestID.
func (s *Store) WriteSpend(ctx context.Context, recs []store.SpendRecord) error {
	return s.WriteBatch(ctx, recs, nil)
}

// WriteBatch is WriteSpend and WriteAudit in one transaction (the spend
// writer's group commit). Both parts are idempotent.
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
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: write spend: %w", err)
	}
	defer tx.Rollback()
	if err := s.writeSpendTx(ctx, tx, recs); err != nil {
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

func (s *Store) writeSpendTx(ctx context.Context, tx *sql.Tx, recs []store.SpendRecord) error {
	if len(recs) == 0 {
		return nil
	}
	ins := tx.StmtContext(ctx, s.insSpend)
	// Totals are summed per id over the inserted records first, so a batch
	// costs one UPDATE per distinct key, team and user.
	keys := map[string]int64{}
	teams := map[string]int64{}
	users := map[string]int64{}
	for i := range recs {
		r := &recs[i]
		res, err := ins.ExecContext(ctx,
			r.RequestID, r.KeyHash, r.KeyAlias, r.TeamID, r.UserID, r.Model, r.ModelGroup, r.Deployment, r.Provider,
			r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.CacheWriteTokens, r.ReasoningTokens, r.Cost,
			r.Status, r.ErrorCode, ms(r.StartTime), ms(r.EndTime), boolInt(r.CacheHit), strList(r.Tags),
			rawOrNull(r.Prompt), rawOrNull(r.Response))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 || r.Cost == 0 {
			continue // duplicate request id, or nothing to add
		}
		if r.KeyHash != "" {
			keys[r.KeyHash] += r.Cost
		}
		if r.TeamID != "" {
			teams[r.TeamID] += r.Cost
		}
		if r.UserID != "" {
			users[r.UserID] += r.Cost
		}
	}
	for _, u := range []struct {
		st *sql.Stmt
		m  map[string]int64
	}{{s.addKeySpend, keys}, {s.addTeamSpend, teams}, {s.addUserSpend, users}} {
		if len(u.m) == 0 {
			continue
		}
		st := tx.StmtContext(ctx, u.st)
		for id, cost := range u.m {
			if _, err := st.ExecContext(ctx, cost, id); err != nil {
				return err
			}
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
			&prompt, &response); err != nil {
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
