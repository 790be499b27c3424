package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Decision is a policy's answer, validated. The request phase may carry
// mutations; the response phase may not.
type Decision struct {
	Allow bool `json:"allow"`
	// Status is the HTTP status of a denial (default 403); 200 when
	// allowed.
	Status  int      `json:"status"`
	Reasons []Reason `json:"reasons,omitempty"`
	// Mutations are applied to the request when it is allowed.
	Mutations Mutations `json:"mutations"`
	// Headers are added to the client's response, allowed or denied.
	Headers [][2]string `json:"headers,omitempty"`
	// Tags land in x.Labels: the spend record and the log line.
	Tags []string `json:"tags,omitempty"`
	// Revision is the policy revision that decided.
	Revision string `json:"revision"`
}

// Reason is why a request was denied (or flagged): Code is stable and is
// the error code the client sees.
type Reason struct {
	Code    string `json:"code"`
	Status  int    `json:"status,omitempty"`
	Message string `json:"message"`
}

// Mutations change the request before routing.
type Mutations struct {
	// Model replaces the model group to route to (x.RouteModel); the
	// router answers 404 for an unknown one.
	Model string `json:"model,omitempty"`
	// MaxTokens caps the output tokens: the body's max_tokens /
	// max_completion_tokens are lowered to it (or it is added).
	MaxTokens int `json:"max_tokens,omitempty"`
	// SetHeaders and RemoveHeaders change the upstream request's headers.
	SetHeaders    [][2]string `json:"set_headers,omitempty"`
	RemoveHeaders []string    `json:"remove_headers,omitempty"`
	// Redact rewrites message text in the body.
	Redact []Redaction `json:"redact,omitempty"`
}

// Redaction replaces text at Path, a JSON pointer into the request body
// (each input message carries its own, e.g. /messages/1/content). With
// Find set only the occurrences of that literal are replaced, in a string
// or in each text part of a content array; without it the whole value
// becomes Replace.
type Redaction struct {
	Path    string `json:"path"`
	Find    string `json:"find,omitempty"`
	Replace string `json:"replace"`
}

// Primary returns the reason a denial is reported with: the first (in
// code order) of those with the decision's status, or a generic one.
func (d *Decision) Primary() Reason {
	for _, r := range d.Reasons {
		if r.Status == d.Status {
			return r
		}
	}
	if len(d.Reasons) > 0 {
		return d.Reasons[0]
	}
	return Reason{Code: "policy_denied", Status: d.Status, Message: "Request denied by policy."}
}

// errShape is a decision that does not type-check: a policy error.
var errShape = errors.New("decision has the wrong shape")

func shapeErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errShape, fmt.Sprintf(format, a...))
}

// parseDecision validates and reads a decision document (as rego returns
// it: map[string]any, []any, json.Number). Anything not in the schema is
// an error, so a typo in a policy fails closed instead of being ignored.
func parseDecision(v any, response bool) (Decision, error) {
	var d Decision
	obj, ok := v.(map[string]any)
	if !ok {
		return d, shapeErr("want an object, got %s", typeName(v))
	}
	allow, ok := obj["allow"].(bool)
	if !ok {
		return d, shapeErr("allow must be a boolean, got %s", typeName(obj["allow"]))
	}
	d.Allow = allow
	for k, val := range obj {
		var err error
		switch k {
		case "allow":
		case "status":
			d.Status, err = intIn(val, 100, 599, "status")
		case "reasons":
			d.Reasons, err = parseReasons(val)
		case "mutations":
			if response {
				if m, ok := val.(map[string]any); !ok || len(m) > 0 {
					err = shapeErr("mutations are not allowed in a response decision")
				}
				break
			}
			d.Mutations, err = parseMutations(val)
		case "headers":
			d.Headers, err = parseHeaderMap(val, "headers")
		case "tags":
			d.Tags, err = stringList(val, "tags")
		default:
			err = shapeErr("unknown key %q (want allow, status, reasons, mutations, headers, tags)", k)
		}
		if err != nil {
			return Decision{}, err
		}
	}
	switch {
	case d.Allow && d.Status == 0:
		d.Status = 200
	case !d.Allow && d.Status == 0:
		d.Status = 403
		for _, r := range d.Reasons {
			d.Status = max(d.Status, r.Status)
		}
	case !d.Allow && d.Status < 400:
		return Decision{}, shapeErr("a denial's status must be 400 or more, got %d", d.Status)
	}
	return d, nil
}

func parseReasons(v any) ([]Reason, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, shapeErr("reasons must be an array, got %s", typeName(v))
	}
	out := make([]Reason, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, shapeErr("reasons[%d] must be an object", i)
		}
		var r Reason
		for k, val := range m {
			var err error
			switch k {
			case "code":
				r.Code, err = nonEmpty(val, fmt.Sprintf("reasons[%d].code", i))
				if err == nil && !validCode(r.Code) {
					err = shapeErr("reasons[%d].code %q must be lower-case letters, digits, _ . or -", i, r.Code)
				}
			case "status":
				r.Status, err = intIn(val, 100, 599, fmt.Sprintf("reasons[%d].status", i))
			case "message":
				r.Message, err = str(val, fmt.Sprintf("reasons[%d].message", i))
			default:
				err = shapeErr("reasons[%d]: unknown key %q (want code, status, message)", i, k)
			}
			if err != nil {
				return nil, err
			}
		}
		if r.Code == "" {
			return nil, shapeErr("reasons[%d].code is required", i)
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out, nil
}

func parseMutations(v any) (Mutations, error) {
	var m Mutations
	obj, ok := v.(map[string]any)
	if !ok {
		return m, shapeErr("mutations must be an object, got %s", typeName(v))
	}
	for k, val := range obj {
		var err error
		switch k {
		case "model":
			m.Model, err = nonEmpty(val, "mutations.model")
		case "max_tokens":
			m.MaxTokens, err = intIn(val, 1, 1<<30, "mutations.max_tokens")
		case "headers":
			m.SetHeaders, m.RemoveHeaders, err = parseUpstreamHeaders(val)
		case "redact":
			m.Redact, err = parseRedact(val)
		default:
			err = shapeErr("mutations: unknown key %q (want model, max_tokens, headers, redact)", k)
		}
		if err != nil {
			return Mutations{}, err
		}
	}
	return m, nil
}

func parseUpstreamHeaders(v any) ([][2]string, []string, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, nil, shapeErr("mutations.headers must be an object {set, remove}, got %s", typeName(v))
	}
	var set [][2]string
	var remove []string
	for k, val := range obj {
		var err error
		switch k {
		case "set":
			set, err = parseHeaderMap(val, "mutations.headers.set")
		case "remove":
			remove, err = stringList(val, "mutations.headers.remove")
			for _, h := range remove {
				if err == nil && !validHeaderName(h) {
					err = shapeErr("mutations.headers.remove: %q is not a header name", h)
				}
			}
		default:
			err = shapeErr("mutations.headers: unknown key %q (want set, remove)", k)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return set, remove, nil
}

func parseRedact(v any) ([]Redaction, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, shapeErr("mutations.redact must be an array, got %s", typeName(v))
	}
	out := make([]Redaction, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, shapeErr("mutations.redact[%d] must be an object", i)
		}
		var r Redaction
		hasReplace := false
		for k, val := range m {
			var err error
			at := fmt.Sprintf("mutations.redact[%d].%s", i, k)
			switch k {
			case "path":
				r.Path, err = nonEmpty(val, at)
				if err == nil && !strings.HasPrefix(r.Path, "/") {
					err = shapeErr("%s must be a JSON pointer such as /messages/1/content", at)
				}
			case "find":
				r.Find, err = nonEmpty(val, at)
			case "replace":
				r.Replace, err = str(val, at)
				hasReplace = true
			default:
				err = shapeErr("mutations.redact[%d]: unknown key %q (want path, find, replace)", i, k)
			}
			if err != nil {
				return nil, err
			}
		}
		if r.Path == "" || !hasReplace {
			return nil, shapeErr("mutations.redact[%d] needs path and replace", i)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseHeaderMap(v any, at string) ([][2]string, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, shapeErr("%s must be an object of header name to value, got %s", at, typeName(v))
	}
	out := make([][2]string, 0, len(obj))
	for k, val := range obj {
		s, ok := val.(string)
		if !ok {
			return nil, shapeErr("%s[%q] must be a string", at, k)
		}
		if !validHeaderName(k) || strings.ContainsAny(s, "\r\n\x00") {
			return nil, shapeErr("%s: invalid header %q", at, k)
		}
		out = append(out, [2]string{k, s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out, nil
}

func stringList(v any, at string) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, shapeErr("%s must be an array of strings, got %s", at, typeName(v))
	}
	out := make([]string, 0, len(list))
	for i, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, shapeErr("%s[%d] must be a string", at, i)
		}
		out = append(out, s)
	}
	return out, nil
}

func intIn(v any, lo, hi int, at string) (int, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, shapeErr("%s must be a number, got %s", at, typeName(v))
	}
	i, err := n.Int64()
	if err != nil || i < int64(lo) || i > int64(hi) {
		return 0, shapeErr("%s must be a whole number from %d to %d, got %s", at, lo, hi, n)
	}
	return int(i), nil
}

func str(v any, at string) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", shapeErr("%s must be a string, got %s", at, typeName(v))
	}
	return s, nil
}

func nonEmpty(v any, at string) (string, error) {
	s, err := str(v, at)
	if err == nil && s == "" {
		err = shapeErr("%s must not be empty", at)
	}
	return s, err
}

func validCode(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return len(s) <= 64
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null (undefined)"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
