package keys

import (
	"sync"
	"sync/atomic"
	"time"
)

// Account holds the live counters of one key, team or user (or one key's
// use of one model): money settled and reserved in the current budget
// period, and the rate-limit window. Every field is an atomic; nothing here
// takes a lock. Accounts are never evicted while the process runs, so a
// reservation or an unflushed settlement is never forgotten.
type Account struct {
	spent    atomic.Int64 // nano-dollars settled this period
	reserved atomic.Int64 // nano-dollars reserved by requests in flight
	resetAt  atomic.Int64 // unix nano of the next budget reset; 0: never

	winStart atomic.Int64 // start of the rate window (unix nano)
	reqs     atomic.Int64 // requests admitted in the window
	tokens   atomic.Int64 // tokens counted in the window (estimates, corrected)
	inflight atomic.Int64

	models sync.Map // model name -> *Account, for per-model limits
}

// Spent returns the settled spend this period.
func (a *Account) Spent() int64 { return a.spent.Load() }

// ResetAt returns the unix time in nanoseconds of the next budget reset; 0:
// never.
func (a *Account) ResetAt() int64 { return a.resetAt.Load() }

// Reserved returns what requests in flight have reserved.
func (a *Account) Reserved() int64 { return a.reserved.Load() }

// model returns the per-model sub-account.
func (a *Account) model(name string) *Account {
	if v, ok := a.models.Load(name); ok {
		return v.(*Account)
	}
	v, _ := a.models.LoadOrStore(name, &Account{})
	return v.(*Account)
}

// rollPeriod resets the spend when the budget period is over and reports
// the new period start (0 when nothing changed).
func (a *Account) rollPeriod(now int64, p Period) int64 {
	at := a.resetAt.Load()
	if at == 0 || now < at || p.IsZero() {
		return 0
	}
	next := p.Next(time.Unix(0, now)).UnixNano()
	if a.resetAt.CompareAndSwap(at, next) {
		a.spent.Store(0)
		return next
	}
	return 0
}

// reserve adds est to the reservations if settled plus reserved plus est
// stays within limit; a budget already spent (spend >= limit, LiteLLM's
// rule) refuses even a free request. limit < 0 means no budget.
func (a *Account) reserve(est, limit int64) bool {
	if limit < 0 {
		return true
	}
	for {
		r := a.reserved.Load()
		s := a.spent.Load()
		if s >= limit || s+r+est > limit {
			return false
		}
		if a.reserved.CompareAndSwap(r, r+est) {
			return true
		}
	}
}

// settle turns a reservation into spend: the real cost is added before the
// reservation is removed, so the sum only ever over-states what is used
// and a concurrent reserve can never slip in between.
func (a *Account) settle(est, cost, limit int64) {
	a.spent.Add(cost)
	if limit >= 0 {
		a.reserved.Add(-est)
	}
}

// release drops a reservation without spending.
func (a *Account) release(est, limit int64) {
	if limit >= 0 {
		a.reserved.Add(-est)
	}
}

const window = int64(time.Minute)

// rollWindow starts a new rate window a minute after the last one started.
// Windows start at the first request after the previous one ended.
func (a *Account) rollWindow(now int64) {
	ws := a.winStart.Load()
	if now-ws >= window {
		if a.winStart.CompareAndSwap(ws, now) {
			a.reqs.Store(0)
			a.tokens.Store(0)
		}
	}
}

// limitHit says which limit refused a request.
type limitHit uint8

const (
	hitNone limitHit = iota
	hitRPM
	hitTPM
	hitParallel
)

// admit counts one request against rpm, tpm (with estTokens) and parallel
// limits (< 0: none). On refusal nothing stays counted. rpm is exact under
// concurrency: the count is incremented and checked in one atomic step.
func (a *Account) admit(now, rpm, tpm, parallel, estTokens int64) limitHit {
	if rpm >= 0 || tpm >= 0 {
		a.rollWindow(now)
	}
	if rpm >= 0 {
		if a.reqs.Add(1) > rpm {
			a.reqs.Add(-1)
			return hitRPM
		}
	}
	if tpm >= 0 {
		// LiteLLM's rule: admitted while the tokens counted so far are
		// under the limit; this request's estimate is then counted.
		if a.tokens.Load() >= tpm {
			if rpm >= 0 {
				a.reqs.Add(-1)
			}
			return hitTPM
		}
		a.tokens.Add(estTokens)
	}
	if parallel >= 0 {
		if a.inflight.Add(1) > parallel {
			a.inflight.Add(-1)
			if rpm >= 0 {
				a.reqs.Add(-1)
			}
			if tpm >= 0 {
				a.tokens.Add(-estTokens)
			}
			return hitParallel
		}
	}
	return hitNone
}

// unadmit undoes admit (a later account refused the request).
func (a *Account) unadmit(rpm, tpm, parallel, estTokens int64) {
	if rpm >= 0 {
		a.reqs.Add(-1)
	}
	if tpm >= 0 {
		a.tokens.Add(-estTokens)
	}
	if parallel >= 0 {
		a.inflight.Add(-1)
	}
}

// done ends an admitted request: the parallel slot is freed and the token
// estimate corrected to what was used.
func (a *Account) done(tpm, parallel, estTokens, usedTokens int64) {
	if tpm >= 0 {
		a.tokens.Add(usedTokens - estTokens)
	}
	if parallel >= 0 {
		a.inflight.Add(-1)
	}
}

// retryAfter is the time until the rate window ends.
func (a *Account) retryAfter(now int64) time.Duration {
	left := a.winStart.Load() + window - now
	if left < int64(time.Second) {
		return time.Second
	}
	return time.Duration(left)
}
