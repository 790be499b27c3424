// Package auth authenticates callers. This first stage checks the master
// key; virtual keys (hashed, with teams and budgets) plug in here later.
package auth

import (
	"bytes"
	"crypto/subtle"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
)

// Credential extracts the caller's key from the headers clients use:
// Authorization: Bearer (OpenAI SDKs), x-api-key (Anthropic SDK), api-key
// (Azure OpenAI SDKs). It returns nil when none is present.
func Credential(h provider.Headers) []byte {
	if v := h.Peek("Authorization"); len(v) > 0 {
		if len(v) > 7 && bytes.EqualFold(v[:7], []byte("bearer ")) {
			return bytes.TrimSpace(v[7:])
		}
		return bytes.TrimSpace(v)
	}
	if v := h.Peek("x-api-key"); len(v) > 0 {
		return v
	}
	if v := h.Peek("api-key"); len(v) > 0 {
		return v
	}
	return nil
}

// MasterKey requires every request to carry the master key.
type MasterKey struct {
	Key []byte
}

var _ pipeline.Middleware = (*MasterKey)(nil)

// Name implements pipeline.Middleware.
func (*MasterKey) Name() string { return "auth.master_key" }

// Serve rejects requests without the master key.
func (m *MasterKey) Serve(x *pipeline.Exchange, next pipeline.Handler) error {
	if err := m.Check(x.Header); err != nil {
		return err
	}
	return next(x)
}

// Check verifies the credential in h in constant time.
func (m *MasterKey) Check(h provider.Headers) *errs.Error {
	got := Credential(h)
	if len(got) == 0 {
		return errs.New(401, errs.CodeUnauthorized, "Authentication Error: no API key provided. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
	}
	if subtle.ConstantTimeCompare(got, m.Key) != 1 {
		return errs.New(401, errs.CodeUnauthorized, "Authentication Error: invalid API key.")
	}
	return nil
}
