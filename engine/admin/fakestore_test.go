package admin

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

// fakeStore is a map-based store.Store with the SQLite store's semantics
// (Update* keep Spend and CreatedAt; ListKeys oldest first; spend From
// inclusive, To exclusive).
type fakeStore struct {
	mu    sync.Mutex
	keys  map[string]*store.Key
	teams map[string]*store.Team
	users map[string]*store.User
	spend []store.SpendRecord
	audit []store.AuditRecord
}

var _ store.Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore {
	return &fakeStore{keys: map[string]*store.Key{}, teams: map[string]*store.Team{}, users: map[string]*store.User{}}
}

// clone deep-copies through JSON, so callers never share memory with the
// store.
func clone[T any](v *T) *T {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return &out
}

// dump is everything stored, for searching.
func (s *fakeStore) dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal([]any{s.keys, s.teams, s.users, s.spend, s.audit})
	return string(b)
}

func (s *fakeStore) CreateKey(_ context.Context, k *store.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k.Hash]; ok {
		return store.ErrConflict
	}
	s.keys[k.Hash] = clone(k)
	return nil
}

func (s *fakeStore) GetKey(_ context.Context, hash string) (*store.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[hash]
	if !ok {
		return nil, store.ErrNotFound
	}
	return clone(k), nil
}

func (s *fakeStore) UpdateKey(_ context.Context, k *store.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.keys[k.Hash]
	if !ok {
		return store.ErrNotFound
	}
	n := clone(k)
	n.Spend, n.CreatedAt, n.CreatedBy = old.Spend, old.CreatedAt, old.CreatedBy
	s.keys[k.Hash] = n
	return nil
}

func (s *fakeStore) DeleteKey(_ context.Context, hash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[hash]; !ok {
		return store.ErrNotFound
	}
	delete(s.keys, hash)
	return nil
}

func (s *fakeStore) ReplaceKeyHash(_ context.Context, oldHash, newHash, newPrefix string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[oldHash]
	if !ok {
		return store.ErrNotFound
	}
	if _, ok := s.keys[newHash]; ok {
		return store.ErrConflict
	}
	delete(s.keys, oldHash)
	k.Hash, k.Prefix = newHash, newPrefix
	s.keys[newHash] = k
	return nil
}

func (s *fakeStore) ListKeys(_ context.Context, teamID, userID string, offset, limit int) ([]*store.Key, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*store.Key
	for _, k := range s.keys {
		if (teamID == "" || k.TeamID == teamID) && (userID == "" || k.UserID == userID) {
			all = append(all, clone(k))
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].CreatedAt.Equal(all[j].CreatedAt) {
			return all[i].CreatedAt.Before(all[j].CreatedAt)
		}
		return all[i].Hash < all[j].Hash
	})
	total := len(all)
	if offset > len(all) {
		offset = len(all)
	}
	all = all[offset:]
	if limit > 0 && limit < len(all) {
		all = all[:limit]
	}
	return all, total, nil
}

func (s *fakeStore) CountKeys(context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys), nil
}

func (s *fakeStore) CreateTeam(_ context.Context, t *store.Team) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.teams[t.TeamID]; ok {
		return store.ErrConflict
	}
	s.teams[t.TeamID] = clone(t)
	return nil
}

func (s *fakeStore) GetTeam(_ context.Context, id string) (*store.Team, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.teams[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return clone(t), nil
}

func (s *fakeStore) UpdateTeam(_ context.Context, t *store.Team) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.teams[t.TeamID]
	if !ok {
		return store.ErrNotFound
	}
	n := clone(t)
	n.Spend, n.CreatedAt = old.Spend, old.CreatedAt
	s.teams[t.TeamID] = n
	return nil
}

func (s *fakeStore) DeleteTeam(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.teams[id]; !ok {
		return store.ErrNotFound
	}
	delete(s.teams, id)
	return nil
}

func (s *fakeStore) ListTeams(context.Context) ([]*store.Team, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*store.Team
	for _, t := range s.teams {
		out = append(out, clone(t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TeamID < out[j].TeamID })
	return out, nil
}

func (s *fakeStore) CreateUser(_ context.Context, u *store.User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[u.UserID]; ok {
		return store.ErrConflict
	}
	s.users[u.UserID] = clone(u)
	return nil
}

func (s *fakeStore) GetUser(_ context.Context, id string) (*store.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return clone(u), nil
}

func (s *fakeStore) UpdateUser(_ context.Context, u *store.User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.users[u.UserID]
	if !ok {
		return store.ErrNotFound
	}
	n := clone(u)
	n.Spend, n.CreatedAt = old.Spend, old.CreatedAt
	s.users[u.UserID] = n
	return nil
}

func (s *fakeStore) ListUsers(context.Context) ([]*store.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*store.User
	for _, u := range s.users {
		out = append(out, clone(u))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}

func (s *fakeStore) WriteSpend(_ context.Context, recs []store.SpendRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.spend = append(s.spend, r)
		if k, ok := s.keys[r.KeyHash]; ok {
			k.Spend += r.Cost
		}
		if t, ok := s.teams[r.TeamID]; ok {
			t.Spend += r.Cost
		}
		if u, ok := s.users[r.UserID]; ok {
			u.Spend += r.Cost
		}
	}
	return nil
}

func (s *fakeStore) ResetSpend(_ context.Context, kind, id string, next time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n *time.Time
	if !next.IsZero() {
		n = &next
	}
	switch kind {
	case "key":
		if k, ok := s.keys[id]; ok {
			k.Spend, k.Limits.BudgetResetAt = 0, n
			return nil
		}
	case "team":
		if t, ok := s.teams[id]; ok {
			t.Spend, t.Limits.BudgetResetAt = 0, n
			return nil
		}
	case "user":
		if u, ok := s.users[id]; ok {
			u.Spend, u.Limits.BudgetResetAt = 0, n
			return nil
		}
	}
	return store.ErrNotFound
}

func (s *fakeStore) ListSpend(_ context.Context, f store.SpendFilter) ([]store.SpendRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.SpendRecord
	for _, r := range s.spend {
		if (f.KeyHash == "" || r.KeyHash == f.KeyHash) && (f.TeamID == "" || r.TeamID == f.TeamID) &&
			(f.UserID == "" || r.UserID == f.UserID) && (f.Model == "" || r.Model == f.Model) &&
			(f.From.IsZero() || !r.StartTime.Before(f.From)) && (f.To.IsZero() || r.StartTime.Before(f.To)) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].StartTime.Equal(out[j].StartTime) {
			return out[i].StartTime.After(out[j].StartTime)
		}
		return out[i].RequestID > out[j].RequestID
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func (s *fakeStore) SpendReport(ctx context.Context, from, to time.Time) ([]store.ReportRow, error) {
	recs, _ := s.ListSpend(ctx, store.SpendFilter{From: from, To: to})
	type gk struct{ day, team, key, alias, model string }
	m := map[gk]*store.ReportRow{}
	for _, r := range recs {
		k := gk{r.StartTime.UTC().Format(time.DateOnly), r.TeamID, r.KeyHash, r.KeyAlias, r.Model}
		row := m[k]
		if row == nil {
			row = &store.ReportRow{Day: k.day, TeamID: k.team, KeyHash: k.key, KeyAlias: k.alias, Model: k.model}
			m[k] = row
		}
		row.Requests++
		row.PromptTokens += r.PromptTokens
		row.CompletionTokens += r.CompletionTokens
		row.Cost += r.Cost
	}
	var out []store.ReportRow
	for _, r := range m {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Day != b.Day {
			return a.Day < b.Day
		}
		if a.TeamID != b.TeamID {
			return a.TeamID < b.TeamID
		}
		if a.KeyHash != b.KeyHash {
			return a.KeyHash < b.KeyHash
		}
		return a.Model < b.Model
	})
	return out, nil
}

func (s *fakeStore) WriteAudit(_ context.Context, recs []store.AuditRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audit = append(s.audit, recs...)
	return nil
}

func (s *fakeStore) ListAudit(_ context.Context, objectType, objectID string, limit int) ([]store.AuditRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.AuditRecord
	for i := len(s.audit) - 1; i >= 0; i-- {
		r := s.audit[i]
		if (objectType == "" || r.ObjectType == objectType) && (objectID == "" || r.ObjectID == objectID) {
			out = append(out, r)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (s *fakeStore) Close() error { return nil }
