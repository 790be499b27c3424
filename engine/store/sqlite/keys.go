package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

const keyColumns = "hash, prefix, key_alias, team_id, user_id, models, " + limitColumns +
	", spend, expires_at, blocked, metadata, created_at, updated_at, created_by"

func scanKey(sc scanner) (*store.Key, error) {
	var (
		k        store.Key
		models   string
		ls       limitScan
		expires  sql.NullInt64
		blocked  int
		metadata sql.NullString
		created  int64
		updated  int64
	)
	dest := []any{&k.Hash, &k.Prefix, &k.KeyAlias, &k.TeamID, &k.UserID, &models}
	dest = append(dest, ls.dest()...)
	dest = append(dest, &k.Spend, &expires, &blocked, &metadata, &created, &updated, &k.CreatedBy)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	var err error
	if k.Models, err = fromStrList(models); err != nil {
		return nil, fmt.Errorf("sqlite: key %s: models: %w", k.Hash, err)
	}
	if k.Limits, err = ls.limits(); err != nil {
		return nil, fmt.Errorf("sqlite: key %s: limits: %w", k.Hash, err)
	}
	k.ExpiresAt = fromNullMS(expires)
	k.Blocked = blocked != 0
	k.Metadata = fromNullRaw(metadata)
	k.CreatedAt = fromMS(created)
	k.UpdatedAt = fromMS(updated)
	return &k, nil
}

// CreateKey inserts k; ErrConflict if the hash exists. A zero CreatedAt or
// UpdatedAt is set to now, in k too. Spend is taken as given (normally 0).
func (s *Store) CreateKey(ctx context.Context, k *store.Key) error {
	if k.Hash == "" {
		return errors.New("sqlite: create key: empty hash")
	}
	stampCreate(&k.CreatedAt, &k.UpdatedAt)
	args := []any{k.Hash, k.Prefix, k.KeyAlias, k.TeamID, k.UserID, strList(k.Models)}
	args = append(args, limitArgs(&k.Limits)...)
	args = append(args, k.Spend, msOrNull(k.ExpiresAt), boolInt(k.Blocked), rawOrNull(k.Metadata),
		ms(k.CreatedAt), ms(k.UpdatedAt), k.CreatedBy)
	res, err := s.w.ExecContext(ctx, "INSERT INTO keys ("+keyColumns+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", args...)
	if err != nil {
		return fmt.Errorf("sqlite: create key: %w", err)
	}
	return conflictUnlessOne(res)
}

// GetKey returns the key with the given hash, or ErrNotFound.
func (s *Store) GetKey(ctx context.Context, hash string) (*store.Key, error) {
	k, err := scanKey(s.getKey.QueryRowContext(ctx, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return k, err
}

// UpdateKey replaces the key's fields except Spend, CreatedAt and CreatedBy
// (which record the creation and keep their stored values). A zero
// UpdatedAt is set to now, in k too.
func (s *Store) UpdateKey(ctx context.Context, k *store.Key) error {
	stampUpdate(&k.UpdatedAt)
	args := []any{k.Prefix, k.KeyAlias, k.TeamID, k.UserID, strList(k.Models)}
	args = append(args, limitArgs(&k.Limits)...)
	args = append(args, msOrNull(k.ExpiresAt), boolInt(k.Blocked), rawOrNull(k.Metadata), ms(k.UpdatedAt), k.Hash)
	res, err := s.w.ExecContext(ctx, `UPDATE keys SET prefix = ?, key_alias = ?, team_id = ?, user_id = ?, models = ?,
	limits = ?, max_budget = ?, soft_budget = ?, budget_duration = ?, budget_reset_at = ?,
	expires_at = ?, blocked = ?, metadata = ?, updated_at = ? WHERE hash = ?`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: update key: %w", err)
	}
	return notFoundUnlessOne(res)
}

// DeleteKey deletes the key; its spend logs stay.
func (s *Store) DeleteKey(ctx context.Context, hash string) error {
	res, err := s.w.ExecContext(ctx, "DELETE FROM keys WHERE hash = ?", hash)
	if err != nil {
		return fmt.Errorf("sqlite: delete key: %w", err)
	}
	return notFoundUnlessOne(res)
}

// ReplaceKeyHash moves a key to newHash and newPrefix: ErrNotFound if
// oldHash does not exist, ErrConflict if newHash does. Spend logs keep the
// hash they were written with.
func (s *Store) ReplaceKeyHash(ctx context.Context, oldHash, newHash, newPrefix string) error {
	if newHash == "" {
		return errors.New("sqlite: replace key hash: empty hash")
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: replace key hash: %w", err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM keys WHERE hash = ?", newHash).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: replace key hash: %w", err)
	}
	if n > 0 {
		return store.ErrConflict
	}
	res, err := tx.ExecContext(ctx, "UPDATE keys SET hash = ?, prefix = ?, updated_at = ? WHERE hash = ?",
		newHash, newPrefix, time.Now().UnixMilli(), oldHash)
	if err != nil {
		return fmt.Errorf("sqlite: replace key hash: %w", err)
	}
	if err := notFoundUnlessOne(res); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: replace key hash: %w", err)
	}
	return nil
}

// ListKeys lists keys filtered by team and user ("" = any), oldest first,
// with the total number matching. limit <= 0 means no limit.
func (s *Store) ListKeys(ctx context.Context, teamID, userID string, offset, limit int) ([]*store.Key, int, error) {
	where, args := "", []any{}
	add := func(col, v string) {
		if v == "" {
			return
		}
		if where == "" {
			where = " WHERE "
		} else {
			where += " AND "
		}
		where += col + " = ?"
		args = append(args, v)
	}
	add("team_id", teamID)
	add("user_id", userID)

	var total int
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*) FROM keys"+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("sqlite: list keys: %w", err)
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.r.QueryContext(ctx, "SELECT "+keyColumns+" FROM keys"+where+
		" ORDER BY created_at, hash LIMIT ? OFFSET ?", append(args, limit, max(offset, 0))...)
	if err != nil {
		return nil, 0, fmt.Errorf("sqlite: list keys: %w", err)
	}
	defer rows.Close()
	var out []*store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("sqlite: list keys: %w", err)
	}
	return out, total, nil
}

// CountKeys counts all keys.
func (s *Store) CountKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*) FROM keys").Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count keys: %w", err)
	}
	return n, nil
}

func stampCreate(created, updated *time.Time) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	if created.IsZero() {
		*created = now
	}
	if updated.IsZero() {
		*updated = *created
	}
}

func stampUpdate(updated *time.Time) {
	if updated.IsZero() {
		*updated = time.Now().UTC().Truncate(time.Millisecond)
	}
}

func conflictUnlessOne(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrConflict
	}
	return nil
}

func notFoundUnlessOne(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}
