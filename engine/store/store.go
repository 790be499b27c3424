// Package store defines what Portcullis persists (virtual keys, teams,
// users, spend records, audit records) and the interface every backend
// implements. The embedded default is SQLite (engine/store/sqlite); a
// PostgreSQL backend will share the schema.
//
// Money is stored in nano-dollars (1e-9 USD) as integers, so sums are
// exact; the admin API converts to and from USD floats at its edge.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound is returned when a key, team or user does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned when creating something that already exists.
var ErrConflict = errors.New("store: already exists")

// Nano is an amount of money in nano-dollars.
type Nano = int64

// NanoPerUSD converts dollars to Nano.
const NanoPerUSD = 1e9

// Limits are the limits a key, team or user may carry. Nil means none.
type Limits struct {
	MaxBudget      *Nano  // hard budget over BudgetDuration (or for ever)
	SoftBudget     *Nano  // alert threshold
	BudgetDuration string // "30s", "1h", "1d", "30d", "monthly", ... ("" = never resets)
	BudgetResetAt  *time.Time
	RPMLimit       *int64
	TPMLimit       *int64
	MaxParallel    *int64
	// Per-model limits, keyed by model group name.
	ModelMaxBudget map[string]Nano
	ModelRPMLimit  map[string]int64
	ModelTPMLimit  map[string]int64
}

// Key is a virtual key. The key itself is never stored: Hash is the hex
// SHA-256 of it, and Prefix its first characters for display ("sk-ab12...").
type Key struct {
	Hash      string
	Prefix    string
	KeyAlias  string
	TeamID    string
	UserID    string
	Models    []string // allowed model names, groups or wildcards; empty = all
	Limits    Limits
	Spend     Nano
	ExpiresAt *time.Time
	Blocked   bool
	Metadata  json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
	CreatedBy string
}

// Team is a team of users with shared limits.
type Team struct {
	TeamID    string
	TeamAlias string
	Models    []string
	Limits    Limits
	Spend     Nano
	Blocked   bool
	Members   []Member
	Metadata  json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Member is a team member.
type Member struct {
	UserID    string `json:"user_id,omitempty"`
	UserEmail string `json:"user_email,omitempty"`
	Role      string `json:"role"`
}

// User is an internal user.
type User struct {
	UserID    string
	UserEmail string
	UserRole  string
	Models    []string
	Limits    Limits
	Spend     Nano
	TeamIDs   []string
	Metadata  json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
}

// SpendRecord is one request's accounting line.
type SpendRecord struct {
	RequestID        string
	KeyHash          string // full hash, to join with keys (never the key)
	KeyAlias         string
	TeamID           string
	UserID           string
	Model            string // the model the client asked for
	ModelGroup       string // the group that served
	Deployment       string
	Provider         string
	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64
	CacheWriteTokens int64
	ReasoningTokens  int64
	Cost             Nano
	Status           int
	ErrorCode        string
	StartTime        time.Time
	EndTime          time.Time
	CacheHit         bool
	// SavedCost is what a cache hit would have cost upstream.
	SavedCost Nano
	// PolicyVersion is the policy revision that decided the request.
	PolicyVersion string
	// Tags are the request's routing tags and the labels policies and
	// plugins added.
	Tags     []string
	Prompt   json.RawMessage // only when configured
	Response json.RawMessage // only when configured
}

// AuditRecord is one admin change. Before and After never hold secrets.
type AuditRecord struct {
	ID         string
	At         time.Time
	Actor      string // "master_key" or the acting key's alias/prefix
	Action     string // "key.generate", "team.update", ...
	ObjectType string // "key", "team", "user"
	ObjectID   string
	Before     json.RawMessage
	After      json.RawMessage
}

// SpendFilter selects spend records; zero fields match all.
type SpendFilter struct {
	KeyHash string
	TeamID  string
	UserID  string
	Model   string
	From    time.Time
	To      time.Time
	Limit   int
}

// ReportRow is one line of the per-day spend report.
type ReportRow struct {
	Day              string // YYYY-MM-DD (UTC)
	TeamID           string
	KeyHash          string
	KeyAlias         string
	Model            string
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	Cost             Nano
}

// Store is what a backend implements. Every method is safe for concurrent
// use.
type Store interface {
	CreateKey(ctx context.Context, k *Key) error
	GetKey(ctx context.Context, hash string) (*Key, error)
	// UpdateKey replaces every field of the key with hash k.Hash except
	// Spend, which only spend batches and budget resets change.
	UpdateKey(ctx context.Context, k *Key) error
	DeleteKey(ctx context.Context, hash string) error
	// ReplaceKeyHash moves a key to a new hash (regenerate), keeping the rest.
	ReplaceKeyHash(ctx context.Context, oldHash, newHash, newPrefix string) error
	ListKeys(ctx context.Context, teamID, userID string, offset, limit int) ([]*Key, int, error)
	// CountKeys counts keys (readiness, tests).
	CountKeys(ctx context.Context) (int, error)

	CreateTeam(ctx context.Context, t *Team) error
	GetTeam(ctx context.Context, id string) (*Team, error)
	UpdateTeam(ctx context.Context, t *Team) error // all fields but Spend
	DeleteTeam(ctx context.Context, id string) error
	ListTeams(ctx context.Context) ([]*Team, error)

	CreateUser(ctx context.Context, u *User) error
	GetUser(ctx context.Context, id string) (*User, error)
	UpdateUser(ctx context.Context, u *User) error // all fields but Spend
	ListUsers(ctx context.Context) ([]*User, error)

	// WriteSpend inserts records and adds each record's cost to its key,
	// team and user spend totals, in one transaction: after a crash,
	// either a record and its totals are both there or neither is.
	WriteSpend(ctx context.Context, recs []SpendRecord) error
	// ResetSpend sets the spend of one key/team/user ("key", "team",
	// "user") to zero and its next reset time, in one statement.
	ResetSpend(ctx context.Context, kind, id string, nextReset time.Time) error
	ListSpend(ctx context.Context, f SpendFilter) ([]SpendRecord, error)
	SpendReport(ctx context.Context, from, to time.Time) ([]ReportRow, error)

	WriteAudit(ctx context.Context, recs []AuditRecord) error
	ListAudit(ctx context.Context, objectType, objectID string, limit int) ([]AuditRecord, error)

	Close() error
}
