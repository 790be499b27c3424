package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/portcullis/portcullis/engine/provider"
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

// plain reports whether d has nothing but allow and status (it holds no
// slices, so a copy can be handed out again).
func (d *Decision) plain() bool {
	return len(d.Reasons) == 0 && len(d.Headers) == 0 && len(d.Tags) == 0 && d.Mutations.Model == "" &&
		d.Mutations.MaxTokens == 0 && len(d.Mutations.SetHeaders) == 0 && len(d.Mutations.RemoveHeaders) == 0 &&
		len(d.Mutations.Redact) == 0
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

// parseDecision validates and reads a decision document as the evaluation
// returns it (an AST value: nothing is converted to Go maps first).
// Anything not in the schema is an error, so a typo in a policy fails
// closed instead of being ignored.
func parseDecision(v ast.Value, response bool) (Decision, error) {
	var d Decision
	obj, ok := v.(ast.Object)
	if !ok {
		return d, shapeErr("want an object, got %s", valueName(v))
	}
	allow, ok := termValue(obj.Get(kAllow)).(ast.Boolean)
	if !ok {
		return d, shapeErr("allow must be a boolean, got %s", valueName(termValue(obj.Get(kAllow))))
	}
	d.Allow = bool(allow)
	found := 1
	var err error
	if t := obj.Get(kStatus); t != nil {
		found++
		d.Status, err = intIn(t.Value, 100, 599, "status")
	}
	if t := obj.Get(kReasons); t != nil && err == nil {
		found++
		d.Reasons, err = parseReasons(t.Value)
	}
	if t := obj.Get(kMutations); t != nil && err == nil {
		found++
		if response {
			if m, ok := t.Value.(ast.Object); !ok || m.Len() > 0 {
				err = shapeErr("mutations are not allowed in a response decision")
			}
		} else {
			d.Mutations, err = parseMutations(t.Value)
		}
	}
	if t := obj.Get(kHeaders); t != nil && err == nil {
		found++
		d.Headers, err = parseHeaderMap(t.Value, "headers")
	}
	if t := obj.Get(kTags); t != nil && err == nil {
		found++
		d.Tags, err = stringList(t.Value, "tags")
	}
	if err == nil && found != obj.Len() {
		err = unknownKey(obj, "", "allow, status, reasons, mutations, headers, tags")
	}
	if err != nil {
		return Decision{}, err
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

// Keys of the decision document.
var (
	kAllow     = ast.StringTerm("allow")
	kStatus    = ast.StringTerm("status")
	kReasons   = ast.StringTerm("reasons")
	kMutations = ast.StringTerm("mutations")
	kModelKey  = ast.StringTerm("model")
	kRedact    = ast.StringTerm("redact")
)

// unknownKey is the error for the first key of obj not among want.
func unknownKey(obj ast.Object, at, want string) error {
	known := strings.Split(want, ", ")
	var bad *ast.Term
	obj.Until(func(k, _ *ast.Term) bool {
		s, ok := k.Value.(ast.String)
		if !ok || !slices.Contains(known, string(s)) {
			bad = k
			return true
		}
		return false
	})
	return shapeErr("%sunknown key %v (want %s)", at, bad, want)
}

func termValue(t *ast.Term) ast.Value {
	if t == nil {
		return nil
	}
	return t.Value
}

// elems returns the elements of an array or a set (policies build reasons
// and tags as either), ok false for anything else.
func elems(v ast.Value) (arr *ast.Array, set []*ast.Term, n int, ok bool) {
	switch c := v.(type) {
	case *ast.Array:
		return c, nil, c.Len(), true
	case ast.Set:
		return nil, c.Slice(), c.Len(), true
	}
	return nil, nil, 0, false
}

func elemAt(arr *ast.Array, set []*ast.Term, i int) *ast.Term {
	if arr != nil {
		return arr.Elem(i)
	}
	return set[i]
}

func parseReasons(v ast.Value) ([]Reason, error) {
	arr, set, n, ok := elems(v)
	if !ok {
		return nil, shapeErr("reasons must be an array, got %s", valueName(v))
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]Reason, 0, n)
	for i := range n {
		m, ok := elemAt(arr, set, i).Value.(ast.Object)
		if !ok {
			return nil, shapeErr("reasons[%d] must be an object", i)
		}
		var r Reason
		err := m.Iter(func(kt, vt *ast.Term) error {
			k, _ := kt.Value.(ast.String)
			val := vt.Value
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
				err = shapeErr("reasons[%d]: unknown key %s (want code, status, message)", i, kt)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if r.Code == "" {
			return nil, shapeErr("reasons[%d].code is required", i)
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out, nil
}

func parseMutations(v ast.Value) (Mutations, error) {
	var m Mutations
	obj, ok := v.(ast.Object)
	if !ok {
		return m, shapeErr("mutations must be an object, got %s", valueName(v))
	}
	if obj.Len() == 0 {
		return m, nil
	}
	found := 0
	var err error
	if t := obj.Get(kModelKey); t != nil {
		found++
		m.Model, err = nonEmpty(t.Value, "mutations.model")
	}
	if t := obj.Get(kMaxTokens); t != nil && err == nil {
		found++
		m.MaxTokens, err = intIn(t.Value, 1, 1<<30, "mutations.max_tokens")
	}
	if t := obj.Get(kHeaders); t != nil && err == nil {
		found++
		m.SetHeaders, m.RemoveHeaders, err = parseUpstreamHeaders(t.Value)
	}
	if t := obj.Get(kRedact); t != nil && err == nil {
		found++
		m.Redact, err = parseRedact(t.Value)
	}
	if err == nil && found != obj.Len() {
		err = unknownKey(obj, "mutations: ", "model, max_tokens, headers, redact")
	}
	if err != nil {
		return Mutations{}, err
	}
	return m, nil
}

func parseUpstreamHeaders(v ast.Value) ([][2]string, []string, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, nil, shapeErr("mutations.headers must be an object {set, remove}, got %s", valueName(v))
	}
	var set [][2]string
	var remove []string
	err := obj.Iter(func(kt, vt *ast.Term) error {
		k, _ := kt.Value.(ast.String)
		val := vt.Value
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
			err = shapeErr("mutations.headers: unknown key %s (want set, remove)", kt)
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return set, remove, nil
}

func parseRedact(v ast.Value) ([]Redaction, error) {
	arr, set, n, ok := elems(v)
	if !ok {
		return nil, shapeErr("mutations.redact must be an array, got %s", valueName(v))
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]Redaction, 0, n)
	for i := range n {
		m, ok := elemAt(arr, set, i).Value.(ast.Object)
		if !ok {
			return nil, shapeErr("mutations.redact[%d] must be an object", i)
		}
		var r Redaction
		hasReplace := false
		err := m.Iter(func(kt, vt *ast.Term) error {
			k, _ := kt.Value.(ast.String)
			val := vt.Value
			var err error
			at := fmt.Sprintf("mutations.redact[%d].%s", i, string(k))
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
				err = shapeErr("mutations.redact[%d]: unknown key %s (want path, find, replace)", i, kt)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if r.Path == "" || !hasReplace {
			return nil, shapeErr("mutations.redact[%d] needs path and replace", i)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseHeaderMap(v ast.Value, at string) ([][2]string, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, shapeErr("%s must be an object of header name to value, got %s", at, valueName(v))
	}
	if obj.Len() == 0 {
		return nil, nil
	}
	out := make([][2]string, 0, obj.Len())
	err := obj.Iter(func(kt, vt *ast.Term) error {
		k, ok := kt.Value.(ast.String)
		if !ok {
			return shapeErr("%s: header name %s is not a string", at, kt)
		}
		s, ok := vt.Value.(ast.String)
		if !ok {
			return shapeErr("%s[%q] must be a string", at, string(k))
		}
		if !validHeaderName(string(k)) || strings.ContainsAny(string(s), "\r\n\x00") {
			return shapeErr("%s: invalid header %q", at, string(k))
		}
		out = append(out, [2]string{string(k), string(s)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out, nil
}

// stringList reads an array or a set of strings (a set in its sorted
// order).
func stringList(v ast.Value, at string) ([]string, error) {
	arr, set, n, ok := elems(v)
	if !ok {
		return nil, shapeErr("%s must be an array of strings, got %s", at, valueName(v))
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]string, 0, n)
	for i := range n {
		s, ok := elemAt(arr, set, i).Value.(ast.String)
		if !ok {
			return nil, shapeErr("%s[%d] must be a string", at, i)
		}
		out = append(out, string(s))
	}
	return out, nil
}

func intIn(v ast.Value, lo, hi int, at string) (int, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, shapeErr("%s must be a number, got %s", at, valueName(v))
	}
	i, ok := n.Int64()
	if !ok || i < int64(lo) || i > int64(hi) {
		return 0, shapeErr("%s must be a whole number from %d to %d, got %s", at, lo, hi, string(n))
	}
	return int(i), nil
}

func str(v ast.Value, at string) (string, error) {
	s, ok := v.(ast.String)
	if !ok {
		return "", shapeErr("%s must be a string, got %s", at, valueName(v))
	}
	return string(s), nil
}

func nonEmpty(v ast.Value, at string) (string, error) {
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

func validHeaderName(s string) bool { return provider.ValidHeaderName(s) }

// valueName names the type of a decision value for an error.
func valueName(v ast.Value) string {
	switch v.(type) {
	case nil:
		return "null (undefined)"
	case ast.Null:
		return "null"
	case ast.Boolean:
		return "boolean"
	case ast.String:
		return "string"
	case ast.Number:
		return "number"
	case *ast.Array:
		return "array"
	case ast.Set:
		return "set"
	case ast.Object:
		return "object"
	}
	return ast.ValueName(v)
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
