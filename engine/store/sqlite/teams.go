package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/portcullis/portcullis/engine/store"
)

const teamColumns = "team_id, team_alias, models, " + limitColumns +
	", spend, blocked, members, metadata, created_at, updated_at"

func scanTeam(sc scanner) (*store.Team, error) {
	var (
		t        store.Team
		models   string
		ls       limitScan
		blocked  int
		members  string
		metadata sql.NullString
		created  int64
		updated  int64
	)
	dest := []any{&t.TeamID, &t.TeamAlias, &models}
	dest = append(dest, ls.dest()...)
	dest = append(dest, &t.Spend, &blocked, &members, &metadata, &created, &updated)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	var err error
	if t.Models, err = fromStrList(models); err != nil {
		return nil, fmt.Errorf("sqlite: team %s: models: %w", t.TeamID, err)
	}
	if t.Limits, err = ls.limits(); err != nil {
		return nil, fmt.Errorf("sqlite: team %s: limits: %w", t.TeamID, err)
	}
	if members != "" && members != "[]" {
		if err := json.Unmarshal([]byte(members), &t.Members); err != nil {
			return nil, fmt.Errorf("sqlite: team %s: members: %w", t.TeamID, err)
		}
		if len(t.Members) == 0 {
			t.Members = nil
		}
	}
	t.Blocked = blocked != 0
	t.Metadata = fromNullRaw(metadata)
	t.CreatedAt = fromMS(created)
	t.UpdatedAt = fromMS(updated)
	return &t, nil
}

func membersText(m []store.Member) string {
	if len(m) == 0 {
		return "[]"
	}
	return jsonText(m)
}

// CreateTeam inserts t; ErrConflict if the id exists. A zero CreatedAt or
// UpdatedAt is set to now, in t too.
func (s *Store) CreateTeam(ctx context.Context, t *store.Team) error {
	if t.TeamID == "" {
		return errors.New("sqlite: create team: empty id")
	}
	stampCreate(&t.CreatedAt, &t.UpdatedAt)
	args := []any{t.TeamID, t.TeamAlias, strList(t.Models)}
	args = append(args, limitArgs(&t.Limits)...)
	args = append(args, t.Spend, boolInt(t.Blocked), membersText(t.Members), rawOrNull(t.Metadata),
		ms(t.CreatedAt), ms(t.UpdatedAt))
	res, err := s.w.ExecContext(ctx, "INSERT INTO teams ("+teamColumns+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", args...)
	if err != nil {
		return fmt.Errorf("sqlite: create team: %w", err)
	}
	return conflictUnlessOne(res)
}

// GetTeam returns the team, or ErrNotFound.
func (s *Store) GetTeam(ctx context.Context, id string) (*store.Team, error) {
	t, err := scanTeam(s.r.QueryRowContext(ctx, "SELECT "+teamColumns+" FROM teams WHERE team_id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return t, err
}

// UpdateTeam replaces the team's fields except Spend and CreatedAt. A zero
// UpdatedAt is set to now, in t too.
func (s *Store) UpdateTeam(ctx context.Context, t *store.Team) error {
	stampUpdate(&t.UpdatedAt)
	args := []any{t.TeamAlias, strList(t.Models)}
	args = append(args, limitArgs(&t.Limits)...)
	args = append(args, boolInt(t.Blocked), membersText(t.Members), rawOrNull(t.Metadata), ms(t.UpdatedAt), t.TeamID)
	res, err := s.w.ExecContext(ctx, `UPDATE teams SET team_alias = ?, models = ?,
	limits = ?, max_budget = ?, soft_budget = ?, budget_duration = ?, budget_reset_at = ?,
	blocked = ?, members = ?, metadata = ?, updated_at = ? WHERE team_id = ?`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: update team: %w", err)
	}
	return notFoundUnlessOne(res)
}

// DeleteTeam deletes the team. Its keys and spend logs stay; the caller
// decides what happens to keys of a deleted team.
func (s *Store) DeleteTeam(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, "DELETE FROM teams WHERE team_id = ?", id)
	if err != nil {
		return fmt.Errorf("sqlite: delete team: %w", err)
	}
	return notFoundUnlessOne(res)
}

// ListTeams lists every team, oldest first.
func (s *Store) ListTeams(ctx context.Context) ([]*store.Team, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT "+teamColumns+" FROM teams ORDER BY created_at, team_id")
	if err != nil {
		return nil, fmt.Errorf("sqlite: list teams: %w", err)
	}
	defer rows.Close()
	var out []*store.Team
	for rows.Next() {
		t, err := scanTeam(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list teams: %w", err)
	}
	return out, nil
}
