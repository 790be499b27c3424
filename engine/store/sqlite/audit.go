package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/portcullis/portcullis/engine/store"
)

const auditColumns = "id, at, actor, action, object_type, object_id, before_value, after_value"

const insertAuditSQL = "INSERT INTO audit_logs (" + auditColumns + ") VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING"

// WriteAudit inserts recs in one transaction. A record without an ID gets a
// random one (written into recs); a record whose ID is already stored is
// skipped, so retrying with the same IDs is safe.
func (s *Store) WriteAudit(ctx context.Context, recs []store.AuditRecord) error {
	return s.WriteBatch(ctx, nil, recs)
}

func (s *Store) writeAuditTx(ctx context.Context, tx *sql.Tx, recs []store.AuditRecord) error {
	if len(recs) == 0 {
		return nil
	}
	ins := tx.StmtContext(ctx, s.insAudit)
	for i := range recs {
		r := &recs[i]
		if _, err := ins.ExecContext(ctx, r.ID, ms(r.At), r.Actor, r.Action, r.ObjectType, r.ObjectID,
			rawOrNull(r.Before), rawOrNull(r.After)); err != nil {
			return err
		}
	}
	return nil
}

// ListAudit returns audit records for an object type and id ("" = any),
// newest first; limit <= 0 means no limit.
func (s *Store) ListAudit(ctx context.Context, objectType, objectID string, limit int) ([]store.AuditRecord, error) {
	var (
		conds []string
		args  []any
	)
	if objectType != "" {
		conds = append(conds, "object_type = ?")
		args = append(args, objectType)
	}
	if objectID != "" {
		conds = append(conds, "object_id = ?")
		args = append(args, objectID)
	}
	q := "SELECT " + auditColumns + " FROM audit_logs"
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY at DESC, id DESC"
	if limit > 0 {
		q += " LIMIT ?"
		args = append(args, limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditRecord
	for rows.Next() {
		var (
			r             store.AuditRecord
			at            int64
			before, after sql.NullString
		)
		if err := rows.Scan(&r.ID, &at, &r.Actor, &r.Action, &r.ObjectType, &r.ObjectID, &before, &after); err != nil {
			return nil, fmt.Errorf("sqlite: list audit: %w", err)
		}
		r.At = fromMS(at)
		r.Before = fromNullRaw(before)
		r.After = fromNullRaw(after)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	return out, nil
}
