package policy

import (
	"bytes"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/portcullis/portcullis/engine/pipeline"
)

// The input document is built as the evaluation reads it. A policy that
// looks at input.principal.team_id and input.llm.model does not pay for the
// request's headers, its messages or even for parsing its body: the
// planned program (ir.go) looks members up in a lazyObject, which builds
// each member once, on first read. Everything else sees the document
// materialized: a builtin other than portcullis.scan / pii_scan, a value
// put into a rule's result, topdown (explanations, a revision that was not
// planned), the response phase. The document's shape is the same either way
// (policies/README.md).

// reqInput is the request-phase input of one exchange.
type reqInput struct {
	doc *inputDoc
	// Set by freeze: the request-phase parts the response phase reuses.
	request, principal *ast.Term
	llm                [][2]*ast.Term
}

// inputDoc holds the exchange and the document's lazy nodes. Documents are
// pooled: the middleware gives one back once the decision is made (the
// decision holds Go strings, not terms of the document).
type inputDoc struct {
	in   reqInput
	e    *Engine
	x    *pipeline.Exchange
	now  time.Time
	meth *ast.Term
	path *ast.Term
	dt   dialectTerms

	nodes [nodeCount]lazyObject
	terms [nodeCount + 1]ast.Term // a term for each node and for messages
	msgs  lazyArray
	body  *bodyFacts
	// The nodes' members, built or not (lazyObject.off indexes them).
	vals [memberTotal]*ast.Term
	got  [memberTotal]bool
}

var docs = sync.Pool{New: func() any { return new(inputDoc) }}

// The lazy objects of the document.
const (
	nodeRoot = iota
	nodeRequest
	nodeHeaders
	nodePrincipal
	nodeLLM
	nodeCount
)

// memberKeys are the members of each node (headers: the allow-list), in
// the order they are built.
var memberKeys = [nodeCount][]*ast.Term{
	nodeRoot:      {kRequest, kPrincipal, kLLM},
	nodeRequest:   {kID, kMethod, kPath, kTimeNS, kHeaders},
	nodePrincipal: {kKeyAlias, kKeyHash, kTeamID, kUserID, kAuthed, kMetadata, kTeamMetadata, kBudget, kTeamBudget, kLimits},
	nodeLLM: {kEndpoint, kDialect, kModel, kStream, kModelGroup, kProvider, kDeployment, kUpstream, kProviders,
		kMaxTokens, kTags, kMessages, kTools, kTemp, kMetadata, kTruncated, kPromptB, kEstTokens, kEstCost},
}

// memberNames are memberKeys as strings.
var memberNames = func() (out [nodeCount][]string) {
	for n, keys := range memberKeys {
		for _, k := range keys {
			out[n] = append(out[n], string(k.Value.(ast.String)))
		}
	}
	return out
}()

// memberAt finds a member by name (-1: none); the lists are short.
func memberAt(node int, k string) int {
	for i, n := range memberNames[node] {
		if n == k {
			return i
		}
	}
	return -1
}

// maxMembers bounds a node's members (the llm's are the most);
// memberTotal is the members of all nodes.
const (
	maxMembers  = 19
	memberTotal = 3 + 5 + 10 + 19
)

// memberOffsets place each node's members in inputDoc.vals.
var memberOffsets = func() (out [nodeCount]int) {
	n := 0
	for i, keys := range memberKeys {
		out[i] = n
		n += len(keys)
	}
	if n != memberTotal {
		panic("policy: memberTotal is out of date")
	}
	return out
}()

// buildInput starts the input document for x; nothing is built yet.
func (e *Engine) buildInput(x *pipeline.Exchange) *reqInput {
	d := docs.Get().(*inputDoc)
	d.e, d.x, d.now, d.dt = e, x, x.Start, dialectTermsOf(x.Dialect)
	if d.now.IsZero() {
		d.now = time.Now()
	}
	d.meth, d.path = kPOST, d.dt.path
	if rl, ok := x.Header.(requestLine); ok {
		if m := rl.Method(); len(m) > 0 {
			d.meth = names.bytes(m)
		}
		if u := rl.RequestURI(); len(u) > 0 {
			if i := bytes.IndexByte(u, '?'); i >= 0 {
				u = u[:i]
			}
			d.path = names.bytes(u)
		}
	}
	for i := range d.nodes {
		d.nodes[i] = lazyObject{doc: d, node: i, off: memberOffsets[i]}
		d.terms[i].Value = &d.nodes[i]
	}
	d.msgs.doc = d
	d.terms[nodeCount].Value = &d.msgs
	d.in.doc = d
	return &d.in
}

// release gives the document back to the pool: nothing may refer to it or
// to its lazy parts any more.
func (in *reqInput) release() {
	d := in.doc
	*d = inputDoc{}
	docs.Put(d)
}

// value is the document for the planned program (lazy until frozen).
func (in *reqInput) value() ast.Value {
	if in.request != nil {
		return in.materialized()
	}
	return &in.doc.nodes[nodeRoot]
}

// materialized is the whole document as AST values.
func (in *reqInput) materialized() ast.Value {
	return in.doc.nodes[nodeRoot].force().Value
}

// freeze materializes what the response phase reuses: the request's body
// and headers are the server's and may be gone by then.
func (in *reqInput) freeze() {
	d := in.doc
	in.request = d.nodes[nodeRequest].force()
	in.principal = d.nodes[nodePrincipal].force()
	llm := d.nodes[nodeLLM].force().Value.(ast.Object)
	llm.Foreach(func(k, v *ast.Term) { in.llm = append(in.llm, [2]*ast.Term{k, v}) })
}

// responseValue is the response-phase input: the request's (frozen), with
// routing facts updated, plus response.
func (in *reqInput) responseValue(e *Engine, x *pipeline.Exchange, resp *ast.Term) ast.Value {
	if in.request == nil {
		in.freeze()
	}
	l := make([][2]*ast.Term, 0, len(in.llm)+4)
	for _, it := range in.llm {
		switch it[0] {
		case kModelGroup, kProvider, kDeployment, kUpstream, kProviders:
			continue
		}
		l = append(l, it)
	}
	r := &inputDoc{e: e, x: x}
	for _, i := range routeMembers {
		if v := r.llmMember(i); v != nil {
			l = append(l, [2]*ast.Term{memberKeys[nodeLLM][i], v})
		}
	}
	return ast.NewObject(
		[2]*ast.Term{kRequest, in.request},
		[2]*ast.Term{kPrincipal, in.principal},
		[2]*ast.Term{kLLM, ast.ObjectTerm(l...)},
		[2]*ast.Term{kResponse, resp},
	)
}

// routeMembers are the llm members routing sets.
var routeMembers = [...]int{4, 5, 6, 7, 8} // model_group, provider, deployment, upstream_model, providers

// member builds member i of node n (nil: absent).
func (d *inputDoc) member(n, i int) *ast.Term {
	x := d.x
	switch n {
	case nodeRoot:
		return &d.terms[[...]int{nodeRequest, nodePrincipal, nodeLLM}[i]]
	case nodeRequest:
		switch i {
		case 0:
			return ast.StringTerm(x.ID)
		case 1:
			return d.meth
		case 2:
			return d.path
		case 3:
			return ast.IntNumberTerm(int(d.now.UnixNano()))
		case 4:
			return &d.terms[nodeHeaders]
		}
	case nodePrincipal:
		var s string
		switch i {
		case 0:
			s = x.KeyAlias
		case 1:
			s = x.KeyHash
		case 2:
			s = x.TeamID
		case 3:
			if x.UserID == "" {
				return nil
			}
			return ast.StringTerm(x.UserID) // an end user's id is not kept in names
		case 4:
			return ast.InternedTerm(x.KeyHash != "" || x.KeyAlias != "")
		default:
			return principalMember(x.Principal, i)
		}
		if s == "" {
			return nil
		}
		return names.get(s)
	case nodeLLM:
		return d.llmMember(i)
	}
	return nil
}

func (d *inputDoc) llmMember(i int) *ast.Term {
	x := d.x
	switch i {
	case 0:
		return d.dt.endpoint
	case 1:
		return d.dt.dialect
	case 2:
		return names.get(x.Model)
	case 3:
		return ast.InternedTerm(x.Stream)
	case 4:
		return names.get(d.group())
	case 5:
		return nameOrNil(x.Provider)
	case 6:
		return nameOrNil(x.DeploymentID)
	case 7:
		return nameOrNil(x.UpstreamModel)
	case 8:
		if d.e.provider == nil {
			return nil
		}
		g := d.group()
		return names.list(g, d.e.provider(g))
	case 9:
		if x.MaxTokens <= 0 {
			return nil
		}
		return ast.IntNumberTerm(x.MaxTokens)
	case 10:
		if len(x.Tags) == 0 {
			return emptyArray
		}
		ts := make([]*ast.Term, len(x.Tags))
		for i, t := range x.Tags {
			ts[i] = names.get(t)
		}
		return ast.ArrayTerm(ts...)
	case 11:
		return &d.terms[nodeCount]
	}
	b := d.bodyFacts()
	switch i {
	case 12:
		return b.tools
	case 13:
		return b.temperature
	case 14:
		return b.metadata
	case 15:
		return ast.InternedTerm(b.truncated)
	case 16:
		return ast.IntNumberTerm(b.total)
	case 17:
		return ast.IntNumberTerm(estimatedTokens(b))
	case 18:
		return d.estimatedCost(estimatedTokens(b))
	}
	return nil
}

// estimatedTokens is llm.estimated_prompt_tokens: about four bytes of
// English text per token.
func estimatedTokens(b *bodyFacts) int { return (b.total + 3) / 4 }

func (d *inputDoc) group() string {
	if d.x.ModelGroup != "" {
		return d.x.ModelGroup
	}
	return d.x.RouteGroup()
}

func nameOrNil(s string) *ast.Term {
	if s == "" {
		return nil
	}
	return names.get(s)
}

func (d *inputDoc) bodyFacts() *bodyFacts {
	if d.body == nil {
		d.body = d.e.parseBody(d.x)
	}
	return d.body
}

// header returns the allow-listed header k's value (nil: absent).
func (d *inputDoc) header(k string) *ast.Term {
	if d.x.Header == nil {
		return nil
	}
	for _, h := range d.e.headers {
		if h.name == k {
			if v := d.x.Header.Peek(h.name); len(v) > 0 {
				return ast.StringTerm(string(v))
			}
			return nil
		}
	}
	return nil
}

// lazyObject is an object of the input document whose members are built on
// first read. It is an ast.Value so that it can sit in a term; anything but
// the planned program's lookups sees it materialized (force).
type lazyObject struct {
	doc  *inputDoc
	node int
	off  int // of the node's members in doc.vals
	mat  *ast.Term
}

// get is the member named by key, nil when absent.
func (o *lazyObject) get(key *ast.Term) *ast.Term {
	k, ok := key.Value.(ast.String)
	if !ok {
		return nil
	}
	if o.node == nodeHeaders {
		return o.doc.header(string(k))
	}
	i := memberAt(o.node, string(k))
	if i < 0 {
		return nil
	}
	return o.member(i)
}

// member is member i, built on first use.
func (o *lazyObject) member(i int) *ast.Term {
	d, j := o.doc, o.off+i
	if !d.got[j] {
		d.vals[j], d.got[j] = d.member(o.node, i), true
	}
	return d.vals[j]
}

// force returns the object built whole.
func (o *lazyObject) force() *ast.Term {
	if o.mat != nil {
		return o.mat
	}
	var buf [maxMembers][2]*ast.Term
	items := buf[:0]
	if o.node == nodeHeaders {
		if o.doc.x.Header != nil {
			for _, h := range o.doc.e.headers {
				if v := o.doc.x.Header.Peek(h.name); len(v) > 0 {
					items = append(items, [2]*ast.Term{h.key, ast.StringTerm(string(v))})
				}
			}
		}
	} else {
		for i, k := range memberKeys[o.node] {
			if v := o.member(i); v != nil {
				items = append(items, [2]*ast.Term{k, materialize(v)})
			}
		}
	}
	o.mat = ast.ObjectTerm(items...)
	return o.mat
}

func (o *lazyObject) Compare(other ast.Value) int       { return o.force().Value.Compare(other) }
func (o *lazyObject) Find(p ast.Ref) (ast.Value, error) { return o.force().Value.Find(p) }
func (o *lazyObject) Hash() int                         { return o.force().Value.Hash() }
func (o *lazyObject) IsGround() bool                    { return true }
func (o *lazyObject) String() string                    { return o.force().Value.String() }
func (o *lazyObject) StringLength() int                 { return o.force().Value.(ast.StringLengther).StringLength() }

// lazyArray is input.llm.messages: portcullis.scan and pii_scan read the
// messages as they are; an element is built when a lookup reads it.
type lazyArray struct {
	doc   *inputDoc
	elems []*ast.Term
	mat   *ast.Term
}

func (a *lazyArray) messages() []message { return a.doc.bodyFacts().msgs }

func (a *lazyArray) len() int { return len(a.messages()) }

func (a *lazyArray) elem(i int) *ast.Term {
	msgs := a.messages()
	if i < 0 || i >= len(msgs) {
		return nil
	}
	if a.elems == nil {
		a.elems = make([]*ast.Term, len(msgs))
	}
	if a.elems[i] == nil {
		m := msgs[i]
		a.elems[i] = ast.ObjectTerm(
			[2]*ast.Term{kRole, names.get(m.role)},
			[2]*ast.Term{kText, ast.StringTerm(m.text)},
			[2]*ast.Term{kPath, m.path},
		)
	}
	return a.elems[i]
}

func (a *lazyArray) force() *ast.Term {
	if a.mat == nil {
		terms := make([]*ast.Term, a.len())
		for i := range terms {
			terms[i] = a.elem(i)
		}
		a.mat = ast.ArrayTerm(terms...)
	}
	return a.mat
}

func (a *lazyArray) Compare(other ast.Value) int       { return a.force().Value.Compare(other) }
func (a *lazyArray) Find(p ast.Ref) (ast.Value, error) { return a.force().Value.Find(p) }
func (a *lazyArray) Hash() int                         { return a.force().Value.Hash() }
func (a *lazyArray) IsGround() bool                    { return true }
func (a *lazyArray) String() string                    { return a.force().Value.String() }
func (a *lazyArray) StringLength() int                 { return a.force().Value.(ast.StringLengther).StringLength() }

// materialize returns t with any lazy part of the input built.
func materialize(t *ast.Term) *ast.Term {
	if t == nil {
		return nil
	}
	switch v := t.Value.(type) {
	case *lazyObject:
		return v.force()
	case *lazyArray:
		return v.force()
	}
	return t
}

// isLazy reports whether t is a lazy part of the input.
func isLazy(t *ast.Term) bool {
	if t == nil {
		return false
	}
	switch t.Value.(type) {
	case *lazyObject, *lazyArray:
		return true
	}
	return false
}

// materializeValue is materialize for a value (topdown's input).
func materializeValue(v ast.Value) ast.Value {
	switch x := v.(type) {
	case *lazyObject:
		return x.force().Value
	case *lazyArray:
		return x.force().Value
	}
	return v
}
