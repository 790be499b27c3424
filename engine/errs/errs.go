// Package errs defines the one error type every stage of Portcullis returns.
//
// An *Error carries everything a caller needs to decide what to do with it:
// the HTTP status the client sees, a stable snake_case Code that decisions are
// made on (never the message text), the OpenAI error "type", and whether a
// fallback to another deployment may follow. It renders itself in the OpenAI
// error shape and in the Anthropic error shape, so each inbound dialect gets
// the body its official SDK expects.
package errs

import (
	"errors"
)

// Code is a stable, machine-readable error code. Codes are part of the wire
// contract: clients and later stages match on them.
type Code string

// Codes used across the gateway.
const (
	CodeInvalidJSON         Code = "invalid_json"
	CodeInvalidRequest      Code = "invalid_request"
	CodeMissingModel        Code = "missing_model"
	CodeModelNotFound       Code = "model_not_found"
	CodeBodyTooLarge        Code = "request_too_large"
	CodeNotFound            Code = "not_found"
	CodeMethodNotAllowed    Code = "method_not_allowed"
	CodeUnauthorized        Code = "invalid_api_key"
	CodeForbidden           Code = "forbidden"
	CodeRateLimited         Code = "rate_limit_exceeded"
	CodeBudgetExceeded      Code = "budget_exceeded"
	CodeUnsupported         Code = "unsupported"
	CodeUpstream            Code = "upstream_error"
	CodeUpstreamTimeout     Code = "upstream_timeout"
	CodeUpstreamUnreachable Code = "upstream_unreachable"
	CodeUpstreamProtocol    Code = "upstream_protocol_error"
	CodeContextWindow       Code = "context_length_exceeded"
	CodeContentFilter       Code = "content_filter"
	CodeQuotaExceeded       Code = "insufficient_quota"
	CodeInternal            Code = "internal_error"
	CodeUnavailable         Code = "service_unavailable"
	CodeTimeout             Code = "timeout"
)

// OpenAI error "type" values. The SDKs key their error classes on the HTTP
// status; the type is informational but clients log it.
const (
	TypeInvalidRequest  = "invalid_request_error"
	TypeAuthentication  = "authentication_error"
	TypePermission      = "permission_error"
	TypeNotFound        = "not_found_error"
	TypeRateLimit       = "rate_limit_error"
	TypeBudget          = "budget_exceeded"
	TypeAPI             = "api_error"
	TypeTimeout         = "timeout_error"
	TypeOverloaded      = "overloaded_error"
	TypeRequestTooLarge = "request_too_large"
)

// Error is the typed error of the gateway.
type Error struct {
	Status    int    // HTTP status sent to the client
	Code      Code   // stable code; decisions read this
	Type      string // OpenAI error type
	Message   string // human-readable, never contains secrets
	Param     string // offending parameter, if any
	Retryable bool   // the same deployment may be tried again
	Fallback  bool   // another deployment may be tried
	// RetryAfter is the upstream's Retry-After in seconds, 0 if none.
	RetryAfter float64
	// Provider names the provider that produced an upstream error.
	Provider string
	// WireCode, when set, is sent as "code" instead of Code (LiteLLM sends
	// "400" for budget errors; clients written for it match on that).
	WireCode string
	// Headers are added to the error response (x-ratelimit-*).
	Headers [][2]string
	cause   error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return string(e.Code) + ": " + e.Message + ": " + e.cause.Error()
	}
	return string(e.Code) + ": " + e.Message
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is an *Error with the same Code, so
// errors.Is(err, &errs.Error{Code: errs.CodeModelNotFound}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Wrap records cause on e and returns e.
func (e *Error) Wrap(cause error) *Error { e.cause = cause; return e }

// New builds an error with the type derived from the status.
func New(status int, code Code, msg string) *Error {
	return &Error{Status: status, Code: code, Type: TypeForStatus(status), Message: msg}
}

// BadRequest is a 400 invalid_request_error.
func BadRequest(code Code, param, msg string) *Error {
	e := New(400, code, msg)
	e.Param = param
	return e
}

// Internal is a 500 that hides its cause from the client.
func Internal(msg string, cause error) *Error {
	return New(500, CodeInternal, msg).Wrap(cause)
}

// From converts any error into an *Error; unknown errors become 500s.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Internal("internal error", err)
}

// CodeOf returns the code of err, or "" if err is not an *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// TypeForStatus maps an HTTP status to the OpenAI error type.
func TypeForStatus(status int) string {
	switch {
	case status == 401:
		return TypeAuthentication
	case status == 403:
		return TypePermission
	case status == 404:
		return TypeNotFound
	case status == 408 || status == 504:
		return TypeTimeout
	case status == 413:
		return TypeRequestTooLarge
	case status == 429:
		return TypeRateLimit
	case status >= 500:
		return TypeAPI
	default:
		return TypeInvalidRequest
	}
}

// AnthropicType maps an HTTP status to the Anthropic error type.
func AnthropicType(status int) string {
	switch {
	case status == 401:
		return "authentication_error"
	case status == 403:
		return "permission_error"
	case status == 404:
		return "not_found_error"
	case status == 413:
		return "request_too_large"
	case status == 429:
		return "rate_limit_error"
	case status == 529 || status == 503:
		return "overloaded_error"
	case status == 504 || status == 408:
		return "timeout_error"
	case status >= 500:
		return "api_error"
	default:
		return "invalid_request_error"
	}
}

// AppendOpenAI appends the OpenAI error body
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
func (e *Error) AppendOpenAI(b []byte) []byte {
	b = append(b, `{"error":{"message":`...)
	b = AppendJSONString(b, e.Message)
	b = append(b, `,"type":`...)
	b = AppendJSONString(b, e.Type)
	b = append(b, `,"param":`...)
	if e.Param == "" {
		b = append(b, "null"...)
	} else {
		b = AppendJSONString(b, e.Param)
	}
	b = append(b, `,"code":`...)
	if e.WireCode != "" {
		b = AppendJSONString(b, e.WireCode)
	} else {
		b = AppendJSONString(b, string(e.Code))
	}
	return append(b, "}}"...)
}

// AppendAnthropic appends the Anthropic error body
// {"type":"error","error":{"type":...,"message":...}}.
func (e *Error) AppendAnthropic(b []byte) []byte {
	b = append(b, `{"type":"error","error":{"type":`...)
	b = AppendJSONString(b, AnthropicType(e.Status))
	b = append(b, `,"message":`...)
	b = AppendJSONString(b, e.Message)
	return append(b, "}}"...)
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal, escaping <, > and &
// as encoding/json does (error messages may echo client input).
func AppendJSONString(b []byte, s string) []byte { return appendJSON(b, s, true) }

// AppendJSONText appends s as a JSON string literal escaping only what
// JSON requires (quote, backslash, control characters), so text keeps its
// bytes (a cached answer replays byte for byte).
func AppendJSONText(b []byte, s string) []byte { return appendJSON(b, s, false) }

func appendJSON(b []byte, s string, html bool) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && (!html || (c != '<' && c != '>' && c != '&')) {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
