// Command router-go is a Portcullis plugin (gw ABI v1) that routes
// requests to a model group by rules: the first rule whose conditions all
// hold decides. See README.md for the exact semantics (shared with the
// Rust router, plugins/router-rust).
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o router-go.wasm .
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/sdk/go"
)

// rule is one routing rule: a model and conditions that must all hold.
type rule struct {
	model string
	conds []cond
}

// cond is one condition of a rule.
type cond struct {
	kind   byte   // 'h' header, 't' tag, '<' max_<field>, '>' min_<field>, '!' never
	name   string // header name (lower-cased), tag, or envelope field
	equals string
	n      float64
}

var (
	rules     []rule
	fallbacks []string
	hasFalls  bool
)

func init() {
	portcullis.OnConfig(configure)
	portcullis.OnRequest(route)
}

func main() {}

func configure(cfg []byte) error {
	rules, fallbacks, hasFalls = nil, nil, false
	root := gjson.ParseBytes(cfg)
	if root.Type == gjson.Null {
		return nil
	}
	if !root.IsObject() {
		return errors.New("config: want an object with rules")
	}
	rs := root.Get("rules")
	if rs.Exists() && !rs.IsArray() {
		return errors.New("rules: want an array")
	}
	var err error
	rs.ForEach(func(i, v gjson.Result) bool {
		var r rule
		if r, err = readRule(v); err != nil {
			err = errors.New("rules[" + strconv.Itoa(int(i.Int())) + "]: " + err.Error())
			return false
		}
		rules = append(rules, r)
		return true
	})
	if err != nil {
		return err
	}
	if f := root.Get("fallbacks"); f.Exists() && f.Type != gjson.Null {
		if !f.IsArray() {
			return errors.New("fallbacks: want an array of model names")
		}
		hasFalls = true
		fallbacks = []string{}
		for _, m := range f.Array() {
			if m.Type != gjson.String {
				return errors.New("fallbacks: want an array of model names")
			}
			fallbacks = append(fallbacks, m.Str)
		}
	}
	return nil
}

func readRule(v gjson.Result) (rule, error) {
	var r rule
	if !v.IsObject() {
		return r, errors.New("want an object")
	}
	m := v.Get("model")
	if m.Type != gjson.String || m.Str == "" {
		return r, errors.New("model: required")
	}
	r.model = m.Str
	var err error
	v.ForEach(func(k, val gjson.Result) bool {
		switch key := k.Str; {
		case key == "model" || key == "equals":
		case key == "header":
			e := v.Get("equals")
			if val.Type != gjson.String || val.Str == "" || e.Type != gjson.String {
				err = errors.New("header: want a header name and an equals string")
				return false
			}
			r.conds = append(r.conds, cond{kind: 'h', name: strings.ToLower(val.Str), equals: e.Str})
		case key == "tag":
			if val.Type != gjson.String {
				err = errors.New("tag: want a string")
				return false
			}
			if val.Str != "" {
				r.conds = append(r.conds, cond{kind: 't', name: val.Str})
			}
		case len(key) > 4 && (strings.HasPrefix(key, "max_") || strings.HasPrefix(key, "min_")):
			if val.Type != gjson.Number {
				err = errors.New(key + ": want a number")
				return false
			}
			kind := byte('<')
			if key[1] == 'i' {
				kind = '>'
			}
			r.conds = append(r.conds, cond{kind: kind, name: key[4:], n: val.Num})
		default:
			// A condition this router does not know never holds.
			r.conds = append(r.conds, cond{kind: '!'})
		}
		return true
	})
	return r, err
}

// holds reports whether c holds for the request.
func (c *cond) holds(req *portcullis.Request) bool {
	switch c.kind {
	case 'h':
		v, ok := req.Header(c.name)
		return ok && v == c.equals
	case 't':
		return req.HasTag(c.name)
	case '<', '>':
		f := req.Field(c.name)
		if f.Type != gjson.Number {
			return false
		}
		if c.kind == '<' {
			return f.Num <= c.n
		}
		return f.Num >= c.n
	}
	return false
}

// route returns the first matching rule's route, or nil (continue).
func route(req *portcullis.Request) *portcullis.Result {
	for i := range rules {
		r := &rules[i]
		if !req.HasModel(r.model) {
			continue
		}
		ok := true
		for j := range r.conds {
			if !r.conds[j].holds(req) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		res := portcullis.Route(r.model)
		if hasFalls {
			res.Fallbacks(fallbacks...)
		}
		return res
	}
	return nil
}
