// Package keys authenticates virtual keys and enforces what they may do:
// models, expiry, blocking, rate limits (rpm, tpm, parallel requests) and
// budgets, for the key and for its team and user, reserved before the
// upstream call and settled after it.
//
// Key metadata comes from the store through a ristretto cache (hot keys
// never touch the database); live counters are Accounts, atomics only,
// kept for the life of the process. Admin changes call KeyChanged,
// TeamChanged... so they take effect at once on this replica.
package keys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/auth"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/store"
)

// Estimator prices the most a request can cost before it runs.
type Estimator interface {
	// Estimate returns an upper bound in nano-dollars for model (or any
	// of the request's own fallbacks) with promptTokens in and at most
	// maxOutput out (0: the model's cap), and the output cap it used.
	Estimate(model string, fallbacks []string, promptTokens, maxOutput int) (int64, int)
}

// limits is a compiled store.Limits; -1 means none.
type limits struct {
	budget, soft       int64
	period             Period
	duration           string // budget_duration as configured
	rpm, tpm, parallel int64
	modelBudget        map[string]int64
	modelRPM, modelTPM map[string]int64
}

func compileLimits(l store.Limits) limits {
	c := limits{budget: -1, soft: -1, rpm: -1, tpm: -1, parallel: -1}
	if l.MaxBudget != nil {
		c.budget = *l.MaxBudget
	}
	if l.SoftBudget != nil {
		c.soft = *l.SoftBudget
	}
	if l.RPMLimit != nil {
		c.rpm = *l.RPMLimit
	}
	if l.TPMLimit != nil {
		c.tpm = *l.TPMLimit
	}
	if l.MaxParallel != nil {
		c.parallel = *l.MaxParallel
	}
	c.period, _ = ParsePeriod(l.BudgetDuration)
	if !c.period.IsZero() {
		c.duration = l.BudgetDuration
	}
	c.modelBudget, c.modelRPM, c.modelTPM = l.ModelMaxBudget, l.ModelRPMLimit, l.ModelTPMLimit
	return c
}

func (l *limits) hasModelLimits() bool {
	return len(l.modelBudget) > 0 || len(l.modelRPM) > 0 || len(l.modelTPM) > 0
}

func mapLimit(m map[string]int64, k string) int64 {
	if v, ok := m[k]; ok {
		return v
	}
	return -1
}

// Meta is the immutable snapshot of a key the request path reads.
type Meta struct {
	Hash     string
	Prefix   string
	Alias    string
	TeamID   string
	UserID   string
	models   Models
	lim      limits
	expires  int64 // unix nano; 0: never
	blocked  bool
	deleted  bool // a tombstone or a negative-cache entry
	version  int64
	acct     *Account
	metadata []byte
	modelSrc []string // the allow-list as stored
	// principal is the policies' view of the key with its team, built on
	// first use and again when the team's snapshot changes.
	principal atomic.Pointer[principalMemo]
}

// principalMemo is a key's Principal and the team snapshot it was built
// with.
type principalMemo struct {
	team *owner
	p    *pipeline.Principal
}

// principalFor returns the Principal of meta with team (nil: none), shared by
// every request until the key or the team changes.
func (meta *Meta) principalFor(team *owner) *pipeline.Principal {
	if pm := meta.principal.Load(); pm != nil && pm.team == team {
		return pm.p
	}
	p := &pipeline.Principal{
		Metadata: meta.metadata, Budget: meta.lim.budgetOf(meta.acct),
		RPMLimit: meta.lim.rpm, TPMLimit: meta.lim.tpm, MaxParallel: meta.lim.parallel, Models: meta.modelSrc,
	}
	if team != nil {
		b := team.lim.budgetOf(team.acct)
		p.TeamMetadata, p.TeamBudget = team.metadata, &b
	}
	meta.principal.Store(&principalMemo{team: team, p: p})
	return p
}

func (l *limits) budgetOf(a *Account) pipeline.Budget {
	return pipeline.Budget{Max: l.budget, Duration: l.duration, Account: a}
}

// owner is the snapshot of a team or a user.
type owner struct {
	id       string
	models   Models
	lim      limits
	blocked  bool
	deleted  bool
	acct     *Account
	metadata []byte
}

type ownerSlot struct{ p atomic.Pointer[owner] }

// Manager is the virtual-key stage.
type Manager struct {
	st        store.Store
	cache     *ristretto.Cache[string, *Meta]
	accts     sync.Map // key hash -> *Account
	teamAccts sync.Map // team id -> *Account
	userAccts sync.Map // user id -> *Account
	teams     sync.Map // team id -> *ownerSlot
	users     sync.Map // user id -> *ownerSlot
	master    []byte
	anon      bool
	est       Estimator
	log       *zap.Logger
	// OnReset persists a budget period reset ("key"/"team"/"user", id,
	// next reset); called on its own goroutine.
	OnReset    func(kind, id string, next time.Time)
	softWarned sync.Map
}

// Options configure a Manager.
type Options struct {
	Store     store.Store
	MasterKey string
	Estimator Estimator
	Log       *zap.Logger
	// CacheKeys bounds the metadata cache (default 100,000 keys; a miss
	// costs one SQLite read).
	CacheKeys int64
	// AllowAnonymous serves requests that carry no key at all (a key that
	// is sent is always checked).
	AllowAnonymous bool
}

// New builds the stage.
func New(o Options) (*Manager, error) {
	if o.CacheKeys <= 0 {
		o.CacheKeys = 100_000
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, *Meta]{
		NumCounters: o.CacheKeys * 10,
		MaxCost:     o.CacheKeys,
		BufferItems: 64,
		// Cost counts keys, not bytes: MaxCost is a number of keys.
		IgnoreInternalCost: true,
		// The key is the raw 32-byte SHA-256: its bytes are the hash.
		KeyToHash: func(k string) (uint64, uint64) {
			if len(k) < 16 {
				return 0, 0
			}
			return leUint64(k[:8]), leUint64(k[8:16])
		},
		// A slower load must not overwrite a newer admin change.
		ShouldUpdate: func(cur, prev *Meta) bool { return cur.version >= prev.version },
	})
	if err != nil {
		return nil, err
	}
	m := &Manager{st: o.Store, cache: c, est: o.Estimator, log: o.Log, anon: o.AllowAnonymous}
	if o.MasterKey != "" {
		m.master = []byte(o.MasterKey)
	}
	return m, nil
}

func leUint64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// Close releases the cache.
func (m *Manager) Close() { m.cache.Close() }

// Hash returns the stored form of a key: hex SHA-256.
func Hash(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

var _ pipeline.Middleware = (*Manager)(nil)

// Name implements pipeline.Middleware.
func (*Manager) Name() string { return "keys" }

// negativeTTL bounds how long an unknown key is remembered as unknown.
const negativeTTL = 30 * time.Second

// lookup returns the key's metadata, or nil when it does not exist.
func (m *Manager) lookup(ctx context.Context, sum *[32]byte) (*Meta, error) {
	raw := string(sum[:])
	if meta, ok := m.cache.Get(raw); ok {
		if meta.deleted {
			return nil, nil
		}
		return meta, nil
	}
	hash := hex.EncodeToString(sum[:])
	k, err := m.st.GetKey(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		m.cache.SetWithTTL(raw, &Meta{deleted: true}, 1, negativeTTL)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	meta := m.compile(k)
	m.cache.Set(raw, meta, 1)
	return meta, nil
}

// compile builds the snapshot of k and attaches its account, creating the
// account from the stored spend the first time.
func (m *Manager) compile(k *store.Key) *Meta {
	meta := &Meta{
		Hash: k.Hash, Prefix: k.Prefix, Alias: k.KeyAlias, TeamID: k.TeamID, UserID: k.UserID,
		models: CompileModels(k.Models), lim: compileLimits(k.Limits), blocked: k.Blocked,
		version: k.UpdatedAt.UnixNano(), metadata: k.Metadata, modelSrc: k.Models,
	}
	if k.ExpiresAt != nil {
		meta.expires = k.ExpiresAt.UnixNano()
	}
	meta.acct = m.account(&m.accts, k.Hash, k.Spend, k.Limits.BudgetResetAt, meta.lim.period, k.CreatedAt)
	return meta
}

func (m *Manager) account(table *sync.Map, id string, spent int64, resetAt *time.Time, p Period, created time.Time) *Account {
	if v, ok := table.Load(id); ok {
		return v.(*Account)
	}
	a := &Account{}
	a.spent.Store(spent)
	switch {
	case resetAt != nil:
		a.resetAt.Store(resetAt.UnixNano())
	case !p.IsZero():
		if created.IsZero() {
			created = time.Now()
		}
		a.resetAt.Store(p.Next(created).UnixNano())
	}
	v, _ := table.LoadOrStore(id, a)
	return v.(*Account)
}

func (m *Manager) owner(ctx context.Context, kind string, id string) (*owner, error) {
	table := &m.teams
	if kind == "user" {
		table = &m.users
	}
	if v, ok := table.Load(id); ok {
		return v.(*ownerSlot).p.Load(), nil
	}
	var o *owner
	switch kind {
	case "team":
		t, err := m.st.GetTeam(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			o = &owner{id: id, deleted: true}
		} else if err != nil {
			return nil, err
		} else {
			o = m.compileTeam(t)
		}
	default:
		u, err := m.st.GetUser(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			// A key may name a user that was never created: no limits.
			o = &owner{id: id, models: CompileModels(nil), lim: compileLimits(store.Limits{}), acct: &Account{}}
		} else if err != nil {
			return nil, err
		} else {
			o = m.compileUser(u)
		}
	}
	slot := &ownerSlot{}
	slot.p.Store(o)
	v, _ := table.LoadOrStore(id, slot)
	return v.(*ownerSlot).p.Load(), nil
}

func (m *Manager) compileTeam(t *store.Team) *owner {
	o := &owner{id: t.TeamID, models: CompileModels(t.Models), lim: compileLimits(t.Limits), blocked: t.Blocked,
		metadata: t.Metadata}
	o.acct = m.account(&m.teamAccts, t.TeamID, t.Spend, t.Limits.BudgetResetAt, o.lim.period, t.CreatedAt)
	return o
}

func (m *Manager) compileUser(u *store.User) *owner {
	o := &owner{id: u.UserID, models: CompileModels(u.Models), lim: compileLimits(u.Limits)}
	o.acct = m.account(&m.userAccts, u.UserID, u.Spend, u.Limits.BudgetResetAt, o.lim.period, u.CreatedAt)
	return o
}

// KeyChanged installs k's new metadata at once (after a create, update,
// block or unblock).
func (m *Manager) KeyChanged(k *store.Key) {
	meta := m.compile(k)
	setReset(meta.acct, k.Limits.BudgetResetAt, meta.lim.period)
	sum, err := hex.DecodeString(k.Hash)
	if err != nil || len(sum) != 32 {
		return
	}
	m.cache.Set(string(sum), meta, 1)
	m.cache.Wait()
}

// KeyRehashed moves a key to its new hash (regenerate): the old secret
// stops working at once and the live account moves with the key, so its
// spend this period and its reservations in flight carry over.
func (m *Manager) KeyRehashed(oldHash string, k *store.Key) {
	if v, ok := m.accts.Load(oldHash); ok {
		m.accts.Store(k.Hash, v)
	}
	m.KeyDeleted(oldHash)
	m.KeyChanged(k)
}

// KeyDeleted removes a key at once.
func (m *Manager) KeyDeleted(hash string) {
	sum, err := hex.DecodeString(hash)
	if err != nil || len(sum) != 32 {
		return
	}
	m.cache.SetWithTTL(string(sum), &Meta{deleted: true, version: time.Now().UnixNano()}, 1, negativeTTL)
	m.cache.Wait()
	m.accts.Delete(hash)
}

// TeamChanged installs t's new limits at once.
func (m *Manager) TeamChanged(t *store.Team) {
	o := m.compileTeam(t)
	setReset(o.acct, t.Limits.BudgetResetAt, o.lim.period)
	m.setOwner(&m.teams, t.TeamID, o)
}

// TeamDeleted makes the team's keys stop working at once.
func (m *Manager) TeamDeleted(id string) {
	m.setOwner(&m.teams, id, &owner{id: id, deleted: true})
}

// UserChanged installs u's new limits at once.
func (m *Manager) UserChanged(u *store.User) {
	o := m.compileUser(u)
	setReset(o.acct, u.Limits.BudgetResetAt, o.lim.period)
	m.setOwner(&m.users, u.UserID, o)
}

// setReset applies an admin change of budget_duration to a live account:
// the next reset is the stored one (the admin API sets it from the new
// duration), or none when the budget no longer resets.
func setReset(a *Account, at *time.Time, p Period) {
	switch {
	case p.IsZero():
		a.resetAt.Store(0)
	case at != nil:
		a.resetAt.Store(at.UnixNano())
	}
}

func (m *Manager) setOwner(table *sync.Map, id string, o *owner) {
	v, _ := table.LoadOrStore(id, &ownerSlot{})
	v.(*ownerSlot).p.Store(o)
}

// KeyAccount returns the live account of a key (spend settled this period
// and reserved), for /key/info.
func (m *Manager) KeyAccount(hash string) (*Account, bool) {
	v, ok := m.accts.Load(hash)
	if !ok {
		return nil, false
	}
	return v.(*Account), true
}

// TeamAccount returns the live account of a team.
func (m *Manager) TeamAccount(id string) (*Account, bool) {
	v, ok := m.teamAccts.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*Account), true
}

// UserAccount returns the live account of a user.
func (m *Manager) UserAccount(id string) (*Account, bool) {
	v, ok := m.userAccts.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*Account), true
}

// errors the stage answers with.
func errUnauthorized(msg string) *errs.Error { return errs.New(401, errs.CodeUnauthorized, msg) }

// Credential is re-exported for the admin API.
var Credential = auth.Credential

// IsMaster reports whether cred is the master key.
func (m *Manager) IsMaster(cred []byte) bool {
	return m.master != nil && subtle.ConstantTimeCompare(cred, m.master) == 1
}

// Valid reports whether cred is the master key or a usable virtual key
// (exists, not blocked, not expired), for endpoints such as /v1/models.
func (m *Manager) Valid(ctx context.Context, cred []byte) bool {
	if len(cred) == 0 {
		return false
	}
	if m.IsMaster(cred) {
		return true
	}
	sum := sha256.Sum256(cred)
	meta, err := m.lookup(ctx, &sum)
	if err != nil || meta == nil || meta.blocked {
		return false
	}
	return meta.expires == 0 || time.Now().UnixNano() < meta.expires
}
