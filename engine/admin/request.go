package admin

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/store"
)

// request is one admin call: the decoded body (POST), the query (GET) and
// the key named in the path (/key/{key}/regenerate).
type request struct {
	body    *reader
	query   *fasthttp.Args
	pathKey string
}

// q returns a query parameter ("" when absent).
func (rq *request) q(name string) string { return string(rq.query.Peek(name)) }

// qInt reads a positive integer query parameter, def when absent.
func (rq *request) qInt(name string, def, max int) (int, *errs.Error) {
	s := rq.q(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || (max > 0 && n > max) {
		msg := name + " must be a positive integer"
		if max > 0 {
			msg += " of at most " + strconv.Itoa(max)
		}
		return 0, errs.BadRequest(errs.CodeInvalidRequest, name, msg)
	}
	return n, nil
}

// qBool reads a boolean query parameter (true/false/1/0).
func (rq *request) qBool(name string) (bool, *errs.Error) {
	s := rq.q(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errs.BadRequest(errs.CodeInvalidRequest, name, name+" must be true or false")
	}
	return b, nil
}

// opt is one body field: absent, explicit null, or a value.
type opt[T any] struct {
	Set  bool // present in the body (null included)
	Null bool // present and null
	V    T
}

// given reports a present, non-null value.
func (o opt[T]) given() bool { return o.Set && !o.Null }

// reader decodes a JSON object body field by field, so absent and null
// differ, and a field of the wrong type is a 400 naming it. The first
// error is kept.
type reader struct {
	f   map[string]json.RawMessage
	err *errs.Error
}

func decodeBody(b []byte) (*reader, *errs.Error) {
	r := &reader{f: map[string]json.RawMessage{}}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return r, nil
	}
	if b[0] != '{' {
		if string(b) == "null" {
			return r, nil
		}
		return nil, errs.BadRequest(errs.CodeInvalidJSON, "", "The request body must be a JSON object")
	}
	if err := json.Unmarshal(b, &r.f); err != nil {
		return nil, errs.BadRequest(errs.CodeInvalidJSON, "", "The request body is not valid JSON: "+err.Error())
	}
	if r.f == nil {
		r.f = map[string]json.RawMessage{}
	}
	return r, nil
}

func (r *reader) fail(param, msg string) {
	if r.err == nil {
		r.err = errs.BadRequest(errs.CodeInvalidRequest, param, msg)
	}
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// field decodes one field into T; want describes T for the error message.
func field[T any](r *reader, name, want string) opt[T] {
	raw, ok := r.f[name]
	if !ok {
		return opt[T]{}
	}
	o := opt[T]{Set: true}
	if isNull(raw) {
		o.Null = true
		return o
	}
	if err := json.Unmarshal(raw, &o.V); err != nil {
		r.fail(name, name+" must be "+want)
	}
	return o
}

func (r *reader) str(name string) opt[string] { return field[string](r, name, "a string") }

func (r *reader) strs(name string) opt[[]string] {
	o := field[[]string](r, name, "a list of strings")
	if r.err == nil && o.given() && o.V == nil {
		o.V = []string{}
	}
	return o
}

func (r *reader) boolean(name string) opt[bool] { return field[bool](r, name, "true or false") }

// usd reads a non-negative amount of dollars into nano-dollars.
func (r *reader) usd(name string) opt[store.Nano] {
	f := field[float64](r, name, "a number")
	o := opt[store.Nano]{Set: f.Set, Null: f.Null}
	if f.given() {
		n, ok := toNano(f.V)
		if !ok {
			r.fail(name, name+" must be a non-negative number of dollars")
		}
		o.V = n
	}
	return o
}

// count reads a non-negative integer (an integral JSON number).
func (r *reader) count(name string) opt[int64] {
	f := field[float64](r, name, "an integer")
	o := opt[int64]{Set: f.Set, Null: f.Null}
	if f.given() {
		if f.V < 0 || f.V != math.Trunc(f.V) || f.V > 1<<53 {
			r.fail(name, name+" must be a non-negative integer")
		}
		o.V = int64(f.V)
	}
	return o
}

// object reads a JSON object (kept raw) or null.
func (r *reader) object(name string) opt[map[string]json.RawMessage] {
	return field[map[string]json.RawMessage](r, name, "an object")
}

// counts reads {model: integer}.
func (r *reader) counts(name string) opt[map[string]int64] {
	f := field[map[string]float64](r, name, "an object of model names to integers")
	o := opt[map[string]int64]{Set: f.Set, Null: f.Null}
	if f.given() {
		o.V = make(map[string]int64, len(f.V))
		for m, v := range f.V {
			if v < 0 || v != math.Trunc(v) || v > 1<<53 {
				r.fail(name, name+"["+strconv.Quote(m)+"] must be a non-negative integer")
				break
			}
			o.V[m] = int64(v)
		}
	}
	return o
}

// toNano converts dollars to nano-dollars, refusing negative, NaN and
// amounts past int64.
func toNano(usd float64) (store.Nano, bool) {
	if math.IsNaN(usd) || usd < 0 || usd > 9e9 {
		return 0, false
	}
	return store.Nano(math.Round(usd * store.NanoPerUSD)), true
}

func toUSD(n store.Nano) float64 { return float64(n) / store.NanoPerUSD }

func usdPtr(n *store.Nano) *float64 {
	if n == nil {
		return nil
	}
	v := toUSD(*n)
	return &v
}

// limitsPatch is the limit fields of a request.
type limitsPatch struct {
	maxBudget, softBudget opt[store.Nano]
	budgetDuration        opt[string]
	period                keys.Period
	rpm, tpm, parallel    opt[int64]
	modelBudget           opt[map[string]store.Nano]
	modelRPM, modelTPM    opt[map[string]int64]
}

// readLimits reads LiteLLM's limit fields: max_budget, soft_budget,
// budget_duration, rpm_limit, tpm_limit, max_parallel_requests,
// model_max_budget, model_rpm_limit, model_tpm_limit.
//
// perModel says whether the model_* limits are allowed: the keys stage
// enforces them on keys only, so teams and users refuse them rather than
// store limits nothing enforces.
func readLimits(r *reader, perModel bool) limitsPatch {
	p := limitsPatch{
		maxBudget:      r.usd("max_budget"),
		softBudget:     r.usd("soft_budget"),
		budgetDuration: r.str("budget_duration"),
		rpm:            r.count("rpm_limit"),
		tpm:            r.count("tpm_limit"),
		parallel:       r.count("max_parallel_requests"),
		modelRPM:       r.counts("model_rpm_limit"),
		modelTPM:       r.counts("model_tpm_limit"),
	}
	if p.budgetDuration.given() {
		per, err := keys.ParsePeriod(p.budgetDuration.V)
		if err != nil {
			r.fail("budget_duration", err.Error())
		}
		p.period = per
	}
	p.modelBudget = readModelBudget(r)
	if !perModel {
		for _, f := range []struct {
			name string
			set  bool
		}{{"model_max_budget", p.modelBudget.given()}, {"model_rpm_limit", p.modelRPM.given()}, {"model_tpm_limit", p.modelTPM.given()}} {
			if f.set {
				r.fail(f.name, f.name+" is supported on keys only")
			}
		}
	}
	return p
}

// readModelBudget reads model_max_budget in both of LiteLLM's forms:
// {"gpt-4o": {"budget_limit": 0.5, "time_period": "30d"}} and
// {"gpt-4o": 0.5}. time_period is validated but not kept: a per-model
// budget spans the key's lifetime (see README).
func readModelBudget(r *reader) opt[map[string]store.Nano] {
	f := r.object("model_max_budget")
	o := opt[map[string]store.Nano]{Set: f.Set, Null: f.Null}
	if !f.given() || r.err != nil {
		return o
	}
	o.V = make(map[string]store.Nano, len(f.V))
	for m, raw := range f.V {
		param := "model_max_budget"
		var usd float64
		var cfg struct {
			BudgetLimit json.RawMessage `json:"budget_limit"`
			TimePeriod  *string         `json:"time_period"`
		}
		switch {
		case json.Unmarshal(raw, &usd) == nil:
		case json.Unmarshal(raw, &cfg) == nil && len(cfg.BudgetLimit) > 0:
			var s string
			if json.Unmarshal(cfg.BudgetLimit, &usd) != nil {
				// LiteLLM's UI sends budget_limit as a string.
				if json.Unmarshal(cfg.BudgetLimit, &s) != nil {
					r.fail(param, "model_max_budget["+strconv.Quote(m)+"].budget_limit must be a number")
					return o
				}
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					r.fail(param, "model_max_budget["+strconv.Quote(m)+"].budget_limit must be a number")
					return o
				}
				usd = v
			}
			if cfg.TimePeriod != nil && *cfg.TimePeriod != "" {
				if _, err := keys.ParsePeriod(*cfg.TimePeriod); err != nil {
					r.fail(param, "model_max_budget["+strconv.Quote(m)+"].time_period: "+err.Error())
					return o
				}
			}
		default:
			r.fail(param, "model_max_budget["+strconv.Quote(m)+"] must be a number or {\"budget_limit\": number, \"time_period\": string}")
			return o
		}
		n, ok := toNano(usd)
		if !ok {
			r.fail(param, "model_max_budget["+strconv.Quote(m)+"] must be a non-negative number of dollars")
			return o
		}
		o.V[m] = n
	}
	return o
}

// apply writes the patch into l: absent fields keep their value, null
// clears. A new budget_duration restarts the period at now.
func (p *limitsPatch) apply(l *store.Limits, now time.Time) {
	setNano(&l.MaxBudget, p.maxBudget)
	setNano(&l.SoftBudget, p.softBudget)
	setInt(&l.RPMLimit, p.rpm)
	setInt(&l.TPMLimit, p.tpm)
	setInt(&l.MaxParallel, p.parallel)
	if p.budgetDuration.Set {
		if p.budgetDuration.Null || p.period.IsZero() {
			l.BudgetDuration, l.BudgetResetAt = "", nil
		} else {
			l.BudgetDuration = strings.TrimSpace(p.budgetDuration.V)
			next := p.period.Next(now)
			l.BudgetResetAt = &next
		}
	}
	if p.modelBudget.Set {
		l.ModelMaxBudget = nonEmpty(p.modelBudget.V)
	}
	if p.modelRPM.Set {
		l.ModelRPMLimit = nonEmpty(p.modelRPM.V)
	}
	if p.modelTPM.Set {
		l.ModelTPMLimit = nonEmpty(p.modelTPM.V)
	}
}

func setNano(dst **store.Nano, o opt[store.Nano]) {
	if !o.Set {
		return
	}
	if o.Null {
		*dst = nil
		return
	}
	v := o.V
	*dst = &v
}

func setInt(dst **int64, o opt[int64]) {
	if !o.Set {
		return
	}
	if o.Null {
		*dst = nil
		return
	}
	v := o.V
	*dst = &v
}

func nonEmpty[V any](m map[string]V) map[string]V {
	if len(m) == 0 {
		return nil
	}
	return m
}

// metaPatch is metadata and tags. LiteLLM keeps tags, model_rpm_limit and
// model_tpm_limit inside metadata; tags stay there, the model limits move to
// store.Limits (and are shown in metadata again on the way out).
type metaPatch struct {
	metadata opt[map[string]json.RawMessage]
	tags     opt[[]string]
}

func readMeta(r *reader) metaPatch {
	return metaPatch{metadata: r.object("metadata"), tags: r.strs("tags")}
}

// apply returns the new stored metadata: metadata replaces the old one when
// given (null empties it), tags go to metadata.tags, and, for a key (l not
// nil), model_rpm_limit / model_tpm_limit found in metadata become limits
// unless lp sets them.
func (p *metaPatch) apply(old json.RawMessage, l *store.Limits, lp *limitsPatch) (json.RawMessage, *errs.Error) {
	var md map[string]json.RawMessage
	switch {
	case p.metadata.Set:
		md = p.metadata.V
	case len(old) > 0:
		if err := json.Unmarshal(old, &md); err != nil {
			md = nil // a non-object stored by someone else: replaced
		}
	}
	if md == nil {
		md = map[string]json.RawMessage{}
	}
	if p.tags.Set {
		if p.tags.Null || len(p.tags.V) == 0 {
			delete(md, "tags")
		} else {
			b, _ := json.Marshal(p.tags.V)
			md["tags"] = b
		}
	}
	type metaLimit struct {
		name string
		set  bool // given at the top level, which wins
		dst  *map[string]int64
	}
	var fromMeta []metaLimit
	if l != nil {
		fromMeta = []metaLimit{
			{"model_rpm_limit", lp != nil && lp.modelRPM.Set, &l.ModelRPMLimit},
			{"model_tpm_limit", lp != nil && lp.modelTPM.Set, &l.ModelTPMLimit},
		}
	}
	for _, f := range fromMeta {
		raw, ok := md[f.name]
		if !ok {
			continue
		}
		delete(md, f.name)
		if f.set || isNull(raw) {
			continue
		}
		var m map[string]float64
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, errs.BadRequest(errs.CodeInvalidRequest, "metadata", "metadata."+f.name+" must be an object of model names to integers")
		}
		out := make(map[string]int64, len(m))
		for k, v := range m {
			if v < 0 || v != math.Trunc(v) {
				return nil, errs.BadRequest(errs.CodeInvalidRequest, "metadata", "metadata."+f.name+"["+strconv.Quote(k)+"] must be a non-negative integer")
			}
			out[k] = int64(v)
		}
		*f.dst = nonEmpty(out)
	}
	if len(md) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(md)
	if err != nil {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "metadata", "metadata is not valid JSON")
	}
	return b, nil
}

// metadataOut is the metadata as LiteLLM shows it: the stored object with
// model_rpm_limit and model_tpm_limit put back; {} when empty.
func metadataOut(md json.RawMessage, l *store.Limits) json.RawMessage {
	if isNull(md) {
		md = nil
	}
	if len(l.ModelRPMLimit) == 0 && len(l.ModelTPMLimit) == 0 {
		if len(md) == 0 {
			return json.RawMessage("{}")
		}
		return md
	}
	m := map[string]json.RawMessage{}
	if len(md) > 0 {
		_ = json.Unmarshal(md, &m)
		if m == nil {
			m = map[string]json.RawMessage{}
		}
	}
	if len(l.ModelRPMLimit) > 0 {
		m["model_rpm_limit"], _ = json.Marshal(l.ModelRPMLimit)
	}
	if len(l.ModelTPMLimit) > 0 {
		m["model_tpm_limit"], _ = json.Marshal(l.ModelTPMLimit)
	}
	b, _ := json.Marshal(m)
	return b
}

// tagsOf reads metadata.tags.
func tagsOf(md json.RawMessage) []string {
	if len(md) == 0 {
		return nil
	}
	var m struct {
		Tags []string `json:"tags"`
	}
	_ = json.Unmarshal(md, &m)
	return m.Tags
}

// limitsView is the limit fields in LiteLLM's names, USD at the edge.
type limitsView struct {
	MaxBudget      *float64                   `json:"max_budget"`
	SoftBudget     *float64                   `json:"soft_budget"`
	BudgetDuration *string                    `json:"budget_duration"`
	BudgetResetAt  *string                    `json:"budget_reset_at"`
	RPMLimit       *int64                     `json:"rpm_limit"`
	TPMLimit       *int64                     `json:"tpm_limit"`
	MaxParallel    *int64                     `json:"max_parallel_requests"`
	ModelMaxBudget map[string]modelBudgetView `json:"model_max_budget"`
	ModelRPMLimit  map[string]int64           `json:"model_rpm_limit"`
	ModelTPMLimit  map[string]int64           `json:"model_tpm_limit"`
}

type modelBudgetView struct {
	BudgetLimit float64 `json:"budget_limit"`
	TimePeriod  *string `json:"time_period"`
}

func viewLimits(l *store.Limits) limitsView {
	v := limitsView{
		MaxBudget: usdPtr(l.MaxBudget), SoftBudget: usdPtr(l.SoftBudget),
		BudgetDuration: strPtr(l.BudgetDuration), BudgetResetAt: timePtr(l.BudgetResetAt),
		RPMLimit: l.RPMLimit, TPMLimit: l.TPMLimit, MaxParallel: l.MaxParallel,
		ModelMaxBudget: map[string]modelBudgetView{},
		ModelRPMLimit:  l.ModelRPMLimit, ModelTPMLimit: l.ModelTPMLimit,
	}
	for m, n := range l.ModelMaxBudget {
		v.ModelMaxBudget[m] = modelBudgetView{BudgetLimit: toUSD(n)}
	}
	return v
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func timePtr(t *time.Time) *string {
	if t == nil || t.IsZero() {
		return nil
	}
	s := fmtTime(*t)
	return &s
}

func timeOrNil(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := fmtTime(t)
	return &s
}

func listOrEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// parseDate reads a start_date / end_date: YYYY-MM-DD (a UTC day) or
// RFC 3339. For an end date, a day means its end (the next midnight).
func parseDate(name, s string, end bool) (time.Time, *errs.Error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if end {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, errs.BadRequest(errs.CodeInvalidRequest, name, name+" must be YYYY-MM-DD or an RFC 3339 time")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
