package keys

import (
	"crypto/sha256"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// charge is one account's part in a request: what was admitted and
// reserved there, undone or settled at the end.
type charge struct {
	acct               *Account
	budget             int64
	soft               int64
	rpm, tpm, parallel int64
	kind, id           string
}

// reservation is what one request holds until it settles.
type reservation struct {
	m         *Manager
	charges   [4]charge
	n         int
	est       int64 // nano-dollars reserved in each budgeted account
	estTokens int64
	settled   bool
	// for Readmit
	meta         *Meta
	team, user   *owner
	promptTokens int
}

var reservationPool = sync.Pool{New: func() any { return new(reservation) }}

// Serve authenticates the key and admits the request against every limit
// that applies, then calls next. The reservation is settled by the server
// through x.Settler once the cost is known.
func (m *Manager) Serve(x *pipeline.Exchange, next pipeline.Handler) error {
	cred := Credential(x.Header)
	if len(cred) == 0 && m.anon {
		return next(x)
	}
	if len(cred) == 0 {
		return errUnauthorized("Authentication Error: no API key provided. Send it as 'Authorization: Bearer sk-...' or 'x-api-key: sk-...'.")
	}
	if m.IsMaster(cred) {
		x.KeyAlias = "master_key"
		return next(x)
	}
	sum := sha256.Sum256(cred)
	meta, err := m.lookup(x.Ctx, &sum)
	if err != nil {
		return errs.New(503, errs.CodeUnavailable, "key store unavailable").Wrap(err)
	}
	if meta == nil {
		return errUnauthorized("Authentication Error: invalid API key.")
	}
	now := time.Now().UnixNano()
	if meta.blocked {
		return errUnauthorized("Authentication Error: this key is blocked.")
	}
	if meta.expires != 0 && now >= meta.expires {
		return errUnauthorized("Authentication Error: this key expired at " + time.Unix(0, meta.expires).UTC().Format(time.RFC3339) + ".")
	}
	var team, user *owner
	if meta.TeamID != "" {
		if team, err = m.owner(x.Ctx, "team", meta.TeamID); err != nil {
			return errs.New(503, errs.CodeUnavailable, "key store unavailable").Wrap(err)
		}
		if team.deleted {
			return errUnauthorized("Authentication Error: the key's team " + meta.TeamID + " no longer exists.")
		}
		if team.blocked {
			return errUnauthorized("Authentication Error: the key's team " + meta.TeamID + " is blocked.")
		}
	}
	if meta.UserID != "" {
		if user, err = m.owner(x.Ctx, "user", meta.UserID); err != nil {
			return errs.New(503, errs.CodeUnavailable, "key store unavailable").Wrap(err)
		}
	}
	if e := modelAllowed(x.Model, meta, team, user); e != nil {
		return e
	}
	x.KeyHash, x.KeyAlias, x.TeamID, x.UserID = meta.Hash, meta.Alias, meta.TeamID, meta.UserID

	// The estimate: every body byte as a prompt token (a token covers at
	// least one byte, and JSON syntax covers per-message overhead) and the
	// output at max_tokens or the model's cap, priced at the dearest
	// deployment the request may reach.
	promptTokens := len(x.Body)
	var est int64
	maxOut := x.MaxTokens
	if m.est != nil {
		est, maxOut = m.est.Estimate(x.Model, x.RequestFallbacks, promptTokens, x.MaxTokens)
	}
	r := reservationPool.Get().(*reservation)
	*r = reservation{m: m, est: est, estTokens: int64(promptTokens + maxOut), meta: meta, team: team, user: user, promptTokens: promptTokens}
	r.add(meta.acct, &meta.lim, "key", meta.Hash)
	if team != nil {
		r.add(team.acct, &team.lim, "team", team.id)
	}
	if user != nil {
		r.add(user.acct, &user.lim, "user", user.id)
	}
	if meta.lim.hasModelLimits() {
		c := &r.charges[r.n]
		*c = charge{acct: meta.acct.model(x.Model), budget: mapLimit(meta.lim.modelBudget, x.Model), soft: -1,
			rpm: mapLimit(meta.lim.modelRPM, x.Model), tpm: mapLimit(meta.lim.modelTPM, x.Model), parallel: -1,
			kind: "key_model", id: x.Model}
		r.n++
	}
	if e := r.admit(now, meta, team, user); e != nil {
		reservationPool.Put(r)
		return e
	}
	x.Settler = r
	x.Principal = meta.principalFor(team)
	return next(x)
}

func (r *reservation) add(a *Account, l *limits, kind, id string) {
	r.charges[r.n] = charge{acct: a, budget: l.budget, soft: l.soft, rpm: l.rpm, tpm: l.tpm, parallel: l.parallel, kind: kind, id: id}
	r.n++
}

// admit rolls budget periods, checks rate limits, then reserves the budget
// in every account; all or nothing.
func (r *reservation) admit(now int64, meta *Meta, team, user *owner) *errs.Error {
	for i := 0; i < r.n; i++ {
		c := &r.charges[i]
		var p Period
		switch c.kind {
		case "key":
			p = meta.lim.period
		case "team":
			p = team.lim.period
		case "user":
			p = user.lim.period
		}
		if next := c.acct.rollPeriod(now, p); next != 0 && r.m.OnReset != nil && c.kind != "key_model" {
			go r.m.OnReset(c.kind, c.id, time.Unix(0, next))
		}
	}
	for i := 0; i < r.n; i++ {
		c := &r.charges[i]
		if hit := c.acct.admit(now, c.rpm, c.tpm, c.parallel, r.estTokens); hit != hitNone {
			for j := 0; j < i; j++ {
				d := &r.charges[j]
				d.acct.unadmit(d.rpm, d.tpm, d.parallel, r.estTokens)
			}
			return rateLimited(c, hit, now)
		}
	}
	if c := r.reserve(r.est); c != nil {
		for j := 0; j < r.n; j++ {
			d := &r.charges[j]
			d.acct.unadmit(d.rpm, d.tpm, d.parallel, r.estTokens)
		}
		return budgetExceeded(c)
	}
	return nil
}

// reserve reserves amount in every budgeted account, all or nothing; it
// returns the charge whose budget refused it, nil when all accepted.
func (r *reservation) reserve(amount int64) *charge {
	for i := 0; i < r.n; i++ {
		c := &r.charges[i]
		if !c.acct.reserve(amount, c.budget) {
			for j := 0; j < i; j++ {
				r.charges[j].acct.release(amount, r.charges[j].budget)
			}
			return c
		}
	}
	return nil
}

// modelAllowed checks model against the key's, its team's and its user's
// model lists.
func modelAllowed(model string, meta *Meta, team, user *owner) *errs.Error {
	var teamModels *Models
	if team != nil {
		teamModels = &team.models
	}
	if !meta.models.Allows(model, teamModels) || (team != nil && !team.models.Allows(model, nil)) ||
		(user != nil && !user.models.Allows(model, nil)) {
		e := errs.New(403, "model_not_allowed", "This key is not allowed to access model `"+model+"`.")
		e.Param = "model"
		return e
	}
	return nil
}

// Readmit implements pipeline.Readmitter. A later stage changed the model
// group (a policy's model override, a plugin's route) or lowered
// max_tokens: the key's model lists are checked against the group now
// served, and the budget reservation follows the new estimate — a dearer
// model reserves the difference in every budgeted account (all or
// nothing: 400 budget_exceeded when it does not fit), a cheaper one
// releases it. Per-model limits (model_max_budget, model_rpm_limit...)
// stay with the model the client asked for.
func (r *reservation) Readmit(x *pipeline.Exchange) error {
	model := x.RouteGroup()
	if model != x.Model {
		if e := modelAllowed(model, r.meta, r.team, r.user); e != nil {
			return e
		}
	}
	if r.m.est == nil {
		return nil
	}
	est, _ := r.m.est.Estimate(model, x.RequestFallbacks, r.promptTokens, x.MaxTokens)
	d := est - r.est
	switch {
	case d > 0:
		if c := r.reserve(d); c != nil {
			return budgetExceeded(c)
		}
	case d < 0:
		for i := 0; i < r.n; i++ {
			r.charges[i].acct.release(-d, r.charges[i].budget)
		}
	}
	r.est = est
	return nil
}

// Settle implements the Settler the server calls: the reservation becomes
// the real cost (0 for a failed request), the parallel slot is freed and
// the token estimate corrected.
func (r *reservation) Settle(x *pipeline.Exchange) {
	if r.settled {
		return
	}
	r.settled = true
	used := int64(x.Tokens.Total())
	for i := 0; i < r.n; i++ {
		c := &r.charges[i]
		before := c.acct.spent.Load()
		c.acct.settle(r.est, x.Cost, c.budget)
		c.acct.done(c.tpm, c.parallel, r.estTokens, used)
		if c.soft >= 0 && before < c.soft && before+x.Cost >= c.soft {
			r.m.log.Warn("soft budget reached", zap.String("kind", c.kind), zap.String("id", displayID(c.kind, c.id)),
				zap.Float64("spend_usd", float64(before+x.Cost)/1e9), zap.Float64("soft_budget_usd", float64(c.soft)/1e9))
		}
	}
	x.Settler = nil
	*r = reservation{}
	reservationPool.Put(r)
}

// displayID never shows a full key hash in logs.
func displayID(kind, id string) string {
	if kind == "key" && len(id) > 12 {
		return id[:12]
	}
	return id
}

func usd(n int64) string { return strconv.FormatFloat(float64(n)/1e9, 'f', -1, 64) }

// budgetExceeded answers as LiteLLM does: HTTP 400, type budget_exceeded.
func budgetExceeded(c *charge) *errs.Error {
	what := map[string]string{"key": "Key", "team": "Team", "user": "User", "key_model": "Key's model"}[c.kind]
	e := errs.New(400, errs.CodeBudgetExceeded, "Budget has been exceeded! "+what+" budget: current cost "+
		usd(c.acct.spent.Load())+", reserved "+usd(c.acct.reserved.Load())+", max budget "+usd(c.budget))
	e.Type = errs.TypeBudget
	e.WireCode = "400"
	return e
}

// rateLimited is a 429 with Retry-After and OpenAI's x-ratelimit headers.
func rateLimited(c *charge, hit limitHit, now int64) *errs.Error {
	what := map[string]string{"key": "key", "team": "team", "user": "user", "key_model": "key's model"}[c.kind]
	var msg string
	reset := c.acct.retryAfter(now)
	e := errs.New(429, errs.CodeRateLimited, "")
	switch hit {
	case hitRPM:
		msg = "Rate limit reached for " + what + ": " + strconv.FormatInt(c.rpm, 10) + " requests per minute."
		e.Headers = append(e.Headers,
			[2]string{"x-ratelimit-limit-requests", strconv.FormatInt(c.rpm, 10)},
			[2]string{"x-ratelimit-remaining-requests", "0"},
			[2]string{"x-ratelimit-reset-requests", reset.Round(time.Second).String()})
	case hitTPM:
		msg = "Rate limit reached for " + what + ": " + strconv.FormatInt(c.tpm, 10) + " tokens per minute."
		e.Headers = append(e.Headers,
			[2]string{"x-ratelimit-limit-tokens", strconv.FormatInt(c.tpm, 10)},
			[2]string{"x-ratelimit-remaining-tokens", "0"},
			[2]string{"x-ratelimit-reset-tokens", reset.Round(time.Second).String()})
	case hitParallel:
		msg = "Too many requests in parallel for " + what + ": at most " + strconv.FormatInt(c.parallel, 10) + "."
		reset = time.Second
	}
	e.Message = msg
	e.RetryAfter = float64(int64(reset.Seconds() + 0.999))
	return e
}
