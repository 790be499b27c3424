package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/portcullis/portcullis/engine/store"
)

const userColumns = "user_id, user_email, user_role, models, " + limitColumns +
	", spend, team_ids, metadata, created_at, updated_at"

func scanUser(sc scanner) (*store.User, error) {
	var (
		u        store.User
		models   string
		ls       limitScan
		teamIDs  string
		metadata sql.NullString
		created  int64
		updated  int64
	)
	dest := []any{&u.UserID, &u.UserEmail, &u.UserRole, &models}
	dest = append(dest, ls.dest()...)
	dest = append(dest, &u.Spend, &teamIDs, &metadata, &created, &updated)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	var err error
	if u.Models, err = fromStrList(models); err != nil {
		return nil, fmt.Errorf("sqlite: user %s: models: %w", u.UserID, err)
	}
	if u.TeamIDs, err = fromStrList(teamIDs); err != nil {
		return nil, fmt.Errorf("sqlite: user %s: team_ids: %w", u.UserID, err)
	}
	if u.Limits, err = ls.limits(); err != nil {
		return nil, fmt.Errorf("sqlite: user %s: limits: %w", u.UserID, err)
	}
	u.Metadata = fromNullRaw(metadata)
	u.CreatedAt = fromMS(created)
	u.UpdatedAt = fromMS(updated)
	return &u, nil
}

// CreateUser inserts u; ErrConflict if the id exists. A zero CreatedAt or
// UpdatedAt is set to now, in u too.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	if u.UserID == "" {
		return errors.New("sqlite: create user: empty id")
	}
	stampCreate(&u.CreatedAt, &u.UpdatedAt)
	args := []any{u.UserID, u.UserEmail, u.UserRole, strList(u.Models)}
	args = append(args, limitArgs(&u.Limits)...)
	args = append(args, u.Spend, strList(u.TeamIDs), rawOrNull(u.Metadata), ms(u.CreatedAt), ms(u.UpdatedAt))
	res, err := s.w.ExecContext(ctx, "INSERT INTO users ("+userColumns+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", args...)
	if err != nil {
		return fmt.Errorf("sqlite: create user: %w", err)
	}
	return conflictUnlessOne(res)
}

// GetUser returns the user, or ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users WHERE user_id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return u, err
}

// UpdateUser replaces the user's fields except Spend and CreatedAt. A zero
// UpdatedAt is set to now, in u too.
func (s *Store) UpdateUser(ctx context.Context, u *store.User) error {
	stampUpdate(&u.UpdatedAt)
	args := []any{u.UserEmail, u.UserRole, strList(u.Models)}
	args = append(args, limitArgs(&u.Limits)...)
	args = append(args, strList(u.TeamIDs), rawOrNull(u.Metadata), ms(u.UpdatedAt), u.UserID)
	res, err := s.w.ExecContext(ctx, `UPDATE users SET user_email = ?, user_role = ?, models = ?,
	limits = ?, max_budget = ?, soft_budget = ?, budget_duration = ?, budget_reset_at = ?,
	team_ids = ?, metadata = ?, updated_at = ? WHERE user_id = ?`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: update user: %w", err)
	}
	return notFoundUnlessOne(res)
}

// ListUsers lists every user, oldest first.
func (s *Store) ListUsers(ctx context.Context) ([]*store.User, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT "+userColumns+" FROM users ORDER BY created_at, user_id")
	if err != nil {
		return nil, fmt.Errorf("sqlite: list users: %w", err)
	}
	defer rows.Close()
	var out []*store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list users: %w", err)
	}
	return out, nil
}
