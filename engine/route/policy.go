package route

import (
	"github.com/portcullis/portcullis/engine/errs"
)

// Class is an error class: what went wrong, as far as routing cares.
type Class uint8

// Error classes. LiteLLM's retry_policy and allowed_fails_policy names map
// onto them (see ClassByLiteLLMName).
const (
	ClassBadRequest    Class = iota // upstream 400/422 that is not one of the below
	ClassAuth                       // upstream 401/403: our key for that provider is wrong
	ClassNotFound                   // upstream 404: the deployment's model does not exist there
	ClassTimeout                    // 408, our deadline, a time-to-first-token or idle deadline
	ClassRateLimit                  // 429
	ClassQuota                      // out of credit: 402, 429/400 with the providers' quota codes
	ClassContentPolicy              // the provider's content filter refused
	ClassContextWindow              // the prompt does not fit the model
	ClassServer                     // 5xx, 529
	ClassConnection                 // cannot connect, connection reset, broken stream before the first byte
	numClasses
)

var classNames = [numClasses]string{"bad_request", "auth", "not_found", "timeout", "rate_limit", "quota",
	"content_policy", "context_window", "server", "connection"}

func (c Class) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return "unknown"
}

// ClassByName returns the class of a snake_case name (our config keys).
func ClassByName(s string) (Class, bool) {
	for i, n := range classNames {
		if n == s {
			return Class(i), true
		}
	}
	return 0, false
}

// ClassByLiteLLMName maps LiteLLM's retry_policy / allowed_fails_policy
// prefixes ("RateLimitError" in "RateLimitErrorRetries") to classes.
func ClassByLiteLLMName(s string) ([]Class, bool) {
	switch s {
	case "BadRequestError":
		return []Class{ClassBadRequest}, true
	case "AuthenticationError":
		return []Class{ClassAuth}, true
	case "TimeoutError":
		return []Class{ClassTimeout}, true
	case "RateLimitError":
		return []Class{ClassRateLimit}, true
	case "ContentPolicyViolationError":
		return []Class{ClassContentPolicy}, true
	case "InternalServerError":
		return []Class{ClassServer, ClassConnection}, true
	}
	return nil, false
}

// Classify returns the class of an upstream error.
func Classify(e *errs.Error) Class {
	switch e.Code {
	case errs.CodeContextWindow:
		return ClassContextWindow
	case errs.CodeContentFilter:
		return ClassContentPolicy
	case errs.CodeQuotaExceeded:
		return ClassQuota
	case errs.CodeRateLimited:
		return ClassRateLimit
	case errs.CodeUpstreamTimeout, errs.CodeTimeout:
		return ClassTimeout
	case errs.CodeUpstreamUnreachable, errs.CodeUpstreamProtocol:
		return ClassConnection
	}
	switch {
	case e.Status == 401 || e.Status == 403:
		return ClassAuth
	case e.Status == 404:
		return ClassNotFound
	case e.Status == 408:
		return ClassTimeout
	case e.Status == 429:
		return ClassRateLimit
	case e.Status >= 500:
		return ClassServer
	}
	return ClassBadRequest
}

// Action is what the router does after an error of one class.
type Action struct {
	// Retries is how many more times the same model group is tried
	// (another pick, which may be the same deployment). -1: num_retries.
	Retries int
	// Fallback allows moving on to the fallback model groups.
	Fallback bool
	// AllowedFails is how many failures of this class within a minute a
	// deployment may have before it is cooled down; -1: never cool down
	// for this class; -2: router's allowed_fails.
	AllowedFails int
}

// DefaultPolicy is the action per class when nothing is configured.
func DefaultPolicy() [numClasses]Action {
	var p [numClasses]Action
	p[ClassBadRequest] = Action{Retries: 0, Fallback: false, AllowedFails: -1}
	p[ClassAuth] = Action{Retries: 0, Fallback: true, AllowedFails: -2}
	p[ClassNotFound] = Action{Retries: 0, Fallback: true, AllowedFails: -2}
	p[ClassTimeout] = Action{Retries: -1, Fallback: true, AllowedFails: -2}
	p[ClassRateLimit] = Action{Retries: -1, Fallback: true, AllowedFails: -2}
	// Out of credit does not come back in seconds: cool down at once.
	p[ClassQuota] = Action{Retries: 0, Fallback: true, AllowedFails: 0}
	// These two fall back only to their own lists
	// (content_policy_fallbacks, context_window_fallbacks).
	p[ClassContentPolicy] = Action{Retries: 0, Fallback: false, AllowedFails: -1}
	p[ClassContextWindow] = Action{Retries: 0, Fallback: false, AllowedFails: -1}
	p[ClassServer] = Action{Retries: -1, Fallback: true, AllowedFails: -2}
	p[ClassConnection] = Action{Retries: -1, Fallback: true, AllowedFails: -2}
	return p
}
