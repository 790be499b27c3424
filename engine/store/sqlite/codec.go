package sqlite

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

// Times are BIGINT unix milliseconds (UTC); 0 is the zero time.Time.

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// msOrNull is a nullable time column's argument.
func msOrNull(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMilli()
}

func fromNullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

func int64OrNull(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func fromNullInt(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	n := v.Int64
	return &n
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rawOrNull stores a JSON document as TEXT, NULL when empty.
func rawOrNull(r json.RawMessage) any {
	if len(r) == 0 {
		return nil
	}
	return string(r)
}

func fromNullRaw(v sql.NullString) json.RawMessage {
	if !v.Valid || v.String == "" {
		return nil
	}
	return json.RawMessage(v.String)
}

// jsonText marshals v (a slice or struct of plain types, which cannot fail).
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("sqlite: marshal: " + err.Error())
	}
	return string(b)
}

// strList encodes a string list; nil and empty both become "[]".
func strList(v []string) string {
	if len(v) == 0 {
		return "[]"
	}
	return jsonText(v)
}

// fromStrList decodes a string list; an empty list comes back nil.
func fromStrList(s string) ([]string, error) {
	if s == "" || s == "[]" {
		return nil, nil
	}
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// limitsDoc is the JSON part of store.Limits: everything but the budget
// fields, which are columns so budget resets and reports can query them.
type limitsDoc struct {
	RPMLimit       *int64           `json:"rpm_limit,omitempty"`
	TPMLimit       *int64           `json:"tpm_limit,omitempty"`
	MaxParallel    *int64           `json:"max_parallel,omitempty"`
	ModelMaxBudget map[string]int64 `json:"model_max_budget,omitempty"`
	ModelRPMLimit  map[string]int64 `json:"model_rpm_limit,omitempty"`
	ModelTPMLimit  map[string]int64 `json:"model_tpm_limit,omitempty"`
}

// limitArgs are the column arguments for l, in limitColumns order:
// limits, max_budget, soft_budget, budget_duration, budget_reset_at.
func limitArgs(l *store.Limits) []any {
	doc := limitsDoc{
		RPMLimit:       l.RPMLimit,
		TPMLimit:       l.TPMLimit,
		MaxParallel:    l.MaxParallel,
		ModelMaxBudget: l.ModelMaxBudget,
		ModelRPMLimit:  l.ModelRPMLimit,
		ModelTPMLimit:  l.ModelTPMLimit,
	}
	return []any{jsonText(doc), int64OrNull(l.MaxBudget), int64OrNull(l.SoftBudget), l.BudgetDuration, msOrNull(l.BudgetResetAt)}
}

const limitColumns = "limits, max_budget, soft_budget, budget_duration, budget_reset_at"

// limitScan receives the limitColumns of one row.
type limitScan struct {
	doc      string
	max      sql.NullInt64
	soft     sql.NullInt64
	duration string
	resetAt  sql.NullInt64
}

func (ls *limitScan) dest() []any {
	return []any{&ls.doc, &ls.max, &ls.soft, &ls.duration, &ls.resetAt}
}

func (ls *limitScan) limits() (store.Limits, error) {
	var doc limitsDoc
	if ls.doc != "" && ls.doc != "{}" {
		if err := json.Unmarshal([]byte(ls.doc), &doc); err != nil {
			return store.Limits{}, err
		}
	}
	return store.Limits{
		MaxBudget:      fromNullInt(ls.max),
		SoftBudget:     fromNullInt(ls.soft),
		BudgetDuration: ls.duration,
		BudgetResetAt:  fromNullMS(ls.resetAt),
		RPMLimit:       doc.RPMLimit,
		TPMLimit:       doc.TPMLimit,
		MaxParallel:    doc.MaxParallel,
		ModelMaxBudget: doc.ModelMaxBudget,
		ModelRPMLimit:  doc.ModelRPMLimit,
		ModelTPMLimit:  doc.ModelTPMLimit,
	}, nil
}

// newID is a random 128-bit hex id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }
