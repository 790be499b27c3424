package policy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// CodePolicyError is the code of a request the policies could not decide
// (evaluation error, undefined or malformed decision, timeout) when
// failing closed.
const CodePolicyError errs.Code = "policy_error"

// TypePolicyViolation is the error type of a policy denial.
const TypePolicyViolation = "policy_violation"

// Middleware returns the request-phase stage: it evaluates the decision
// for each request, applies it, and registers the response filter when
// the policies define a response decision.
func (e *Engine) Middleware() pipeline.Middleware { return (*stage)(e) }

type stage Engine

var _ pipeline.Middleware = (*stage)(nil)

func (s *stage) Name() string { return "policy" }

// Serve decides on x with the revision current when the request arrives;
// the response phase uses the same one.
func (s *stage) Serve(x *pipeline.Exchange, next pipeline.Handler) error {
	e := (*Engine)(s)
	rev := e.cur.Load()
	start := time.Now()
	in := e.buildInput(x)
	ctx := x.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	now := x.Start
	if now.IsZero() {
		now = start
	}
	if rev.response != nil {
		in.freeze() // the response phase comes after the request's buffers may be gone
	}
	d, err := rev.eval(ctx, &rev.request, in.value(), now, e.s.Timeout, false, nil)
	if rev.response == nil {
		in.release() // nothing refers to the document any more (the decision holds strings only)
	}
	x.PolicyVersion = rev.id
	group, maxTokens := x.RouteGroup(), x.MaxTokens
	if err == nil && d.Allow {
		// A mutation that cannot be applied is a policy error too.
		err = e.apply(x, &d.Mutations)
	}
	if err != nil {
		e.met.decision(phaseRequest, resultError, time.Since(start))
		if fe := e.failed(x, err, "request"); fe != nil {
			return fe
		}
	} else {
		x.ResponseSet = append(x.ResponseSet, d.Headers...)
		x.Labels = append(x.Labels, d.Tags...)
		if !d.Allow {
			e.met.decision(phaseRequest, resultDeny, time.Since(start))
			return e.denied(x, &d, "request")
		}
		e.met.decision(phaseRequest, resultAllow, time.Since(start))
		if x.RouteGroup() != group || x.MaxTokens != maxTokens {
			// A model override or a token cap: the key's model lists and
			// budget reservation follow (pipeline.Readmitter).
			if err := x.Readmit(); err != nil {
				return err
			}
		}
	}
	if rev.response != nil {
		x.AddFilter(&respFilter{e: e, rev: rev, in: in})
	}
	return next(x)
}

// failed reports a policy that produced no decision: the error to return
// (503 policy_error), or nil when failing open.
func (e *Engine) failed(x *pipeline.Exchange, err error, phase string) *errs.Error {
	kind := "eval"
	var ee *EvalError
	if errors.As(err, &ee) {
		kind = ee.Kind
	}
	if e.s.FailOpen {
		e.log.Warn("policy failed; letting the request through (fail_open)", zap.String("id", x.ID),
			zap.String("phase", phase), zap.String("revision", x.PolicyVersion), zap.String("kind", kind), zap.Error(err))
		x.Labels = append(x.Labels, "policy:error")
		return nil
	}
	e.log.Error("policy failed; request refused (fail closed)", zap.String("id", x.ID),
		zap.String("phase", phase), zap.String("revision", x.PolicyVersion), zap.String("kind", kind), zap.Error(err))
	return errs.New(503, CodePolicyError, "The request could not be checked against the gateway's policies ("+kind+").").Wrap(err)
}

// denied is the client's error for a denial: the policy's status, code
// and message.
func (e *Engine) denied(x *pipeline.Exchange, d *Decision, phase string) *errs.Error {
	r := d.Primary()
	msg := r.Message
	if msg == "" {
		msg = "Request denied by policy (" + r.Code + ")."
	}
	if ce := e.log.Check(zap.InfoLevel, "policy denied"); ce != nil {
		codes := make([]string, len(d.Reasons))
		for i, r := range d.Reasons {
			codes[i] = r.Code
		}
		ce.Write(zap.String("id", x.ID), zap.String("phase", phase), zap.String("revision", d.Revision),
			zap.Int("status", d.Status), zap.Strings("reasons", codes))
	}
	err := errs.New(d.Status, errs.Code(r.Code), msg)
	err.Type = TypePolicyViolation
	return err
}

// apply carries out an allowed decision's mutations. The body is rewritten
// into a new buffer (x.Body is the server's, read-only); nothing on x
// changes unless every mutation applies.
func (e *Engine) apply(x *pipeline.Exchange, m *Mutations) error {
	body, changed := x.Body, false
	var err error
	capTokens := m.MaxTokens > 0 && x.Dialect != llm.OpenAIEmbedding
	if capTokens {
		var capped bool
		if body, capped, err = capMaxTokens(body, x.Dialect, m.MaxTokens); err != nil {
			return &EvalError{Kind: "mutation", Revision: x.PolicyVersion, Err: err}
		}
		changed = changed || capped
	}
	for _, r := range m.Redact {
		if body, err = redact(body, r); err != nil {
			return &EvalError{Kind: "mutation", Revision: x.PolicyVersion, Err: err}
		}
		changed = true
	}
	if changed {
		x.Body = body
	}
	if capTokens && (x.MaxTokens == 0 || x.MaxTokens > m.MaxTokens) {
		x.MaxTokens = m.MaxTokens
	}
	if m.Model != "" {
		x.RouteModel = m.Model
	}
	x.UpstreamSet = append(x.UpstreamSet, m.SetHeaders...)
	x.UpstreamRemove = append(x.UpstreamRemove, m.RemoveHeaders...)
	return nil
}

// tokenFields are the body's output caps, whichever the client sent.
var tokenFields = [...]string{"max_tokens", "max_completion_tokens", "max_output_tokens"}

// capMaxTokens lowers every output cap in body above n to n, or adds one
// when the body has none (max_completion_tokens for chat, max_tokens
// otherwise); changed is false when the body already respects n.
func capMaxTokens(body []byte, d llm.Dialect, n int) (_ []byte, changed bool, err error) {
	found := false
	for _, f := range tokenFields {
		v := gjson.GetBytes(body, f)
		if !v.Exists() || v.Type == gjson.Null {
			continue
		}
		found = true
		if v.Type == gjson.Number && v.Int() > 0 && v.Int() <= int64(n) {
			continue
		}
		if body, err = sjson.SetBytes(body, f, n); err != nil {
			return nil, false, fmt.Errorf("set %s: %w", f, err)
		}
		changed = true
	}
	if found {
		return body, changed, nil
	}
	f := "max_tokens"
	if d == llm.OpenAIChat {
		f = "max_completion_tokens"
	}
	if body, err = sjson.SetBytes(body, f, n); err != nil {
		return nil, false, fmt.Errorf("set %s: %w", f, err)
	}
	return body, true, nil
}

// redact applies one redaction to body.
func redact(body []byte, r Redaction) ([]byte, error) {
	path, err := pointerPath(r.Path)
	if err != nil {
		return nil, err
	}
	v := gjson.GetBytes(body, path)
	if !v.Exists() {
		return nil, fmt.Errorf("redact: %s is not in the request body", r.Path)
	}
	if r.Find == "" {
		return sjson.SetBytes(body, path, r.Replace)
	}
	switch {
	case v.Type == gjson.String:
		if !strings.Contains(v.Str, r.Find) {
			return body, nil
		}
		return sjson.SetBytes(body, path, strings.ReplaceAll(v.Str, r.Find, r.Replace))
	case v.IsArray():
		i := 0
		v.ForEach(func(_, part gjson.Result) bool {
			field := ""
			switch part.Get("type").Str {
			case "text", "input_text", "output_text":
				field = "text"
			case "tool_result":
				if part.Get("content").Type == gjson.String {
					field = "content"
				}
			}
			if t := part.Get(field); field != "" && t.Type == gjson.String && strings.Contains(t.Str, r.Find) {
				body, err = sjson.SetBytes(body, path+"."+strconv.Itoa(i)+"."+field, strings.ReplaceAll(t.Str, r.Find, r.Replace))
			}
			i++
			return err == nil
		})
		return body, err
	}
	return nil, fmt.Errorf("redact: %s is neither text nor a list of content parts", r.Path)
}

// pointerPath turns a JSON pointer (/messages/1/content) into a gjson /
// sjson path (messages.1.content).
func pointerPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") || len(p) < 2 {
		return "", fmt.Errorf("redact: %q is not a JSON pointer into the body", p)
	}
	var b strings.Builder
	for i, seg := range strings.Split(p[1:], "/") {
		if seg == "" {
			return "", fmt.Errorf("redact: %q has an empty segment", p)
		}
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		if i > 0 {
			b.WriteByte('.')
		}
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			if strings.IndexByte(`\.*?|#@!=<>%:`, c) >= 0 {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
