package policy

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// DefaultHeaders are the request headers the input carries by default
// (lower-cased, when present).
var DefaultHeaders = []string{
	"user-agent", "content-type", "x-region", "x-request-id", "x-forwarded-for", "x-real-ip",
	"x-client-name", "x-user-id", "anthropic-version", "anthropic-beta", "openai-organization", "openai-project",
}

// secretHeaders never reach the input, whatever the allow-list says.
var secretHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "x-api-key": true, "api-key": true,
	"cookie": true, "set-cookie": true, "x-goog-api-key": true,
}

type headerName struct {
	name string
	key  *ast.Term
}

func headerList(names []string) []headerName {
	if names == nil {
		names = DefaultHeaders
	}
	out := make([]headerName, 0, len(names))
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" || secretHeaders[n] || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, headerName{name: n, key: ast.StringTerm(n)})
	}
	return out
}

// Keys of the input document, built once.
var (
	kRequest    = ast.StringTerm("request")
	kPrincipal  = ast.StringTerm("principal")
	kLLM        = ast.StringTerm("llm")
	kResponse   = ast.StringTerm("response")
	kID         = ast.StringTerm("id")
	kMethod     = ast.StringTerm("method")
	kPath       = ast.StringTerm("path")
	kTimeNS     = ast.StringTerm("time_ns")
	kHeaders    = ast.StringTerm("headers")
	kKeyAlias   = ast.StringTerm("key_alias")
	kKeyHash    = ast.StringTerm("key_hash")
	kTeamID     = ast.StringTerm("team_id")
	kUserID     = ast.StringTerm("user_id")
	kAuthed     = ast.StringTerm("authenticated")
	kEndpoint   = ast.StringTerm("endpoint")
	kDialect    = ast.StringTerm("dialect")
	kModel      = ast.StringTerm("model")
	kModelGroup = ast.StringTerm("model_group")
	kProvider   = ast.StringTerm("provider")
	kProviders  = ast.StringTerm("providers")
	kDeployment = ast.StringTerm("deployment")
	kUpstream   = ast.StringTerm("upstream_model")
	kMessages   = ast.StringTerm("messages")
	kRole       = ast.StringTerm("role")
	kText       = ast.StringTerm("text")
	kTools      = ast.StringTerm("tools")
	kMaxTokens  = ast.StringTerm("max_tokens")
	kTemp       = ast.StringTerm("temperature")
	kStream     = ast.StringTerm("stream")
	kMetadata   = ast.StringTerm("metadata")
	kTags       = ast.StringTerm("tags")
	kTruncated  = ast.StringTerm("truncated")
	kPromptB    = ast.StringTerm("prompt_bytes")
	kEstTokens  = ast.StringTerm("estimated_prompt_tokens")
	kFinal      = ast.StringTerm("final")
	kWindow     = ast.StringTerm("window")
	kOffset     = ast.StringTerm("offset")
)

// reqInput is the request-phase input, kept by the response filter.
type reqInput struct {
	request, principal *ast.Term
	llm                [][2]*ast.Term
	value              ast.Object
}

// endpointName is the operation an endpoint serves, as policies see it.
func endpointName(d llm.Dialect) (name, path string) {
	switch d {
	case llm.OpenAIChat:
		return "chat.completions", "/v1/chat/completions"
	case llm.OpenAICompletion:
		return "completions", "/v1/completions"
	case llm.OpenAIEmbedding:
		return "embeddings", "/v1/embeddings"
	case llm.AnthropicMessages:
		return "messages", "/v1/messages"
	}
	return "", ""
}

// requestLine is what *fasthttp.RequestHeader offers beyond Peek.
type requestLine interface {
	Method() []byte
	RequestURI() []byte
}

// buildInput builds the request-phase input document for x. Strings that
// come from the body are copied: builtin results are cached across
// requests and must never alias a pooled request buffer.
func (e *Engine) buildInput(x *pipeline.Exchange) *reqInput {
	in := &reqInput{}
	endpoint, path := endpointName(x.Dialect)
	method := "POST"
	if rl, ok := x.Header.(requestLine); ok {
		if m := rl.Method(); len(m) > 0 {
			method = string(m)
		}
		if u := rl.RequestURI(); len(u) > 0 {
			s := string(u)
			if i := strings.IndexByte(s, '?'); i >= 0 {
				s = s[:i]
			}
			path = s
		}
	}
	now := x.Start
	if now.IsZero() {
		now = time.Now()
	}
	hdrs := make([][2]*ast.Term, 0, 4)
	if x.Header != nil {
		for _, h := range e.headers {
			if v := x.Header.Peek(h.name); len(v) > 0 {
				hdrs = append(hdrs, [2]*ast.Term{h.key, ast.StringTerm(string(v))})
			}
		}
	}
	in.request = ast.ObjectTerm(
		[2]*ast.Term{kID, ast.StringTerm(x.ID)},
		[2]*ast.Term{kMethod, ast.StringTerm(method)},
		[2]*ast.Term{kPath, ast.StringTerm(path)},
		[2]*ast.Term{kTimeNS, ast.IntNumberTerm(int(now.UnixNano()))},
		[2]*ast.Term{kHeaders, ast.ObjectTerm(hdrs...)},
	)

	p := make([][2]*ast.Term, 0, 5)
	for _, f := range [...]struct {
		k *ast.Term
		v string
	}{{kKeyAlias, x.KeyAlias}, {kKeyHash, x.KeyHash}, {kTeamID, x.TeamID}, {kUserID, x.UserID}} {
		if f.v != "" {
			p = append(p, [2]*ast.Term{f.k, ast.StringTerm(f.v)})
		}
	}
	p = append(p, [2]*ast.Term{kAuthed, ast.InternedTerm(x.KeyHash != "" || x.KeyAlias != "")})
	in.principal = ast.ObjectTerm(p...)

	l := make([][2]*ast.Term, 0, 20)
	l = append(l,
		[2]*ast.Term{kEndpoint, ast.StringTerm(endpoint)},
		[2]*ast.Term{kDialect, ast.StringTerm(x.Dialect.String())},
		[2]*ast.Term{kModel, ast.StringTerm(x.Model)},
		[2]*ast.Term{kStream, ast.InternedTerm(x.Stream)},
	)
	l = e.routeItems(l, x)
	if x.MaxTokens > 0 {
		l = append(l, [2]*ast.Term{kMaxTokens, ast.IntNumberTerm(x.MaxTokens)})
	}
	tags := make([]*ast.Term, len(x.Tags))
	for i, t := range x.Tags {
		tags[i] = ast.StringTerm(t)
	}
	l = append(l, [2]*ast.Term{kTags, ast.ArrayTerm(tags...)})
	l = e.bodyItems(l, x)
	in.llm = l
	in.value = ast.NewObject(
		[2]*ast.Term{kRequest, in.request},
		[2]*ast.Term{kPrincipal, in.principal},
		[2]*ast.Term{kLLM, ast.ObjectTerm(l...)},
	)
	return in
}

// routeItems adds what is known about routing: the model group, and
// after routing the provider and deployment that served.
func (e *Engine) routeItems(l [][2]*ast.Term, x *pipeline.Exchange) [][2]*ast.Term {
	group := x.ModelGroup
	if group == "" {
		group = x.RouteGroup()
	}
	l = append(l, [2]*ast.Term{kModelGroup, ast.StringTerm(group)})
	if x.Provider != "" {
		l = append(l, [2]*ast.Term{kProvider, ast.StringTerm(x.Provider)})
	}
	if x.DeploymentID != "" {
		l = append(l, [2]*ast.Term{kDeployment, ast.StringTerm(x.DeploymentID)})
	}
	if x.UpstreamModel != "" {
		l = append(l, [2]*ast.Term{kUpstream, ast.StringTerm(x.UpstreamModel)})
	}
	if e.provider != nil {
		ps := e.provider(group)
		terms := make([]*ast.Term, len(ps))
		for i, p := range ps {
			terms[i] = ast.StringTerm(p)
		}
		l = append(l, [2]*ast.Term{kProviders, ast.ArrayTerm(terms...)})
	}
	return l
}

// responseValue is the response-phase input: the request's, with routing
// facts updated, plus response.
func (in *reqInput) responseValue(e *Engine, x *pipeline.Exchange, resp *ast.Term) ast.Value {
	l := make([][2]*ast.Term, 0, len(in.llm)+4)
	for _, it := range in.llm {
		switch it[0] {
		case kModelGroup, kProvider, kDeployment, kUpstream, kProviders:
			continue
		}
		l = append(l, it)
	}
	l = e.routeItems(l, x)
	return ast.NewObject(
		[2]*ast.Term{kRequest, in.request},
		[2]*ast.Term{kPrincipal, in.principal},
		[2]*ast.Term{kLLM, ast.ObjectTerm(l...)},
		[2]*ast.Term{kResponse, resp},
	)
}

// message is one piece of prompt text and where it sits in the body.
type message struct {
	role, text, path string
}

// bodyItems reads the body once: messages (text only, capped), tools,
// temperature, metadata and the size figures.
func (e *Engine) bodyItems(l [][2]*ast.Term, x *pipeline.Exchange) [][2]*ast.Term {
	if len(x.Body) == 0 {
		return append(l, [2]*ast.Term{kMessages, ast.ArrayTerm()},
			[2]*ast.Term{kTools, ast.ArrayTerm()},
			[2]*ast.Term{kTruncated, ast.InternedTerm(false)},
			[2]*ast.Term{kPromptB, ast.InternedTerm(0)},
			[2]*ast.Term{kEstTokens, ast.InternedTerm(0)})
	}
	root := gjson.Parse(unsafe.String(unsafe.SliceData(x.Body), len(x.Body)))
	var msgs []message
	var tools []*ast.Term
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "messages":
			i := 0
			v.ForEach(func(_, m gjson.Result) bool {
				role := m.Get("role").Str
				msgs = append(msgs, message{role: role, text: contentText(m.Get("content")),
					path: "/messages/" + strconv.Itoa(i) + "/content"})
				i++
				return true
			})
		case "system":
			msgs = append([]message{{role: "system", text: contentText(v), path: "/system"}}, msgs...)
		case "prompt", "input":
			if x.Dialect == llm.OpenAIChat || x.Dialect == llm.AnthropicMessages {
				break
			}
			if v.IsArray() {
				i := 0
				v.ForEach(func(_, p gjson.Result) bool {
					if p.Type == gjson.String {
						msgs = append(msgs, message{role: "user", text: p.Str, path: "/" + k.Str + "/" + strconv.Itoa(i)})
					}
					i++
					return true
				})
			} else if v.Type == gjson.String {
				msgs = append(msgs, message{role: "user", text: v.Str, path: "/" + k.Str})
			}
		case "tools":
			v.ForEach(func(_, t gjson.Result) bool {
				name := t.Get("function.name")
				if !name.Exists() {
					name = t.Get("name")
				}
				if name.Type == gjson.String {
					tools = append(tools, ast.StringTerm(strings.Clone(name.Str)))
				}
				return true
			})
		case "temperature":
			if v.Type == gjson.Number {
				l = append(l, [2]*ast.Term{kTemp, ast.NumberTerm(json.Number(strings.Clone(v.Raw)))})
			}
		case "metadata":
			if v.IsObject() {
				l = append(l, [2]*ast.Term{kMetadata, jsonTerm(v, 0)})
			}
		}
		return true
	})
	total := 0
	for _, m := range msgs {
		total += len(m.text)
	}
	// The cap keeps the newest text: the budget is spent from the last
	// message back, and a message that does not fit keeps its beginning.
	truncated := false
	budget := e.s.MaxTextBytes
	for i := len(msgs) - 1; i >= 0; i-- {
		t := msgs[i].text
		if len(t) > budget {
			t = cutUTF8(t, budget)
			truncated = true
		}
		budget -= len(t)
		msgs[i].text = t
	}
	mt := make([]*ast.Term, len(msgs))
	for i, m := range msgs {
		mt[i] = ast.ObjectTerm(
			[2]*ast.Term{kRole, ast.StringTerm(strings.Clone(m.role))},
			[2]*ast.Term{kText, ast.StringTerm(strings.Clone(m.text))},
			[2]*ast.Term{kPath, ast.StringTerm(m.path)},
		)
	}
	if tools == nil {
		tools = []*ast.Term{}
	}
	return append(l,
		[2]*ast.Term{kMessages, ast.ArrayTerm(mt...)},
		[2]*ast.Term{kTools, ast.ArrayTerm(tools...)},
		[2]*ast.Term{kTruncated, ast.InternedTerm(truncated)},
		[2]*ast.Term{kPromptB, ast.IntNumberTerm(total)},
		// An estimate: about four bytes of English text per token.
		[2]*ast.Term{kEstTokens, ast.IntNumberTerm((total + 3) / 4)},
	)
}

// contentText is a message's text: the content string, or its text parts
// (OpenAI {type: text|input_text, text}, Anthropic {type: text, text} and
// tool_result content) joined by newlines. Images and other parts are
// skipped.
func contentText(c gjson.Result) string {
	switch {
	case c.Type == gjson.String:
		return c.Str
	case c.IsArray():
		var b strings.Builder
		c.ForEach(func(_, p gjson.Result) bool {
			var t string
			switch p.Get("type").Str {
			case "text", "input_text", "output_text":
				t = p.Get("text").Str
			case "tool_result":
				t = contentText(p.Get("content"))
			default:
				if p.Type == gjson.String {
					t = p.Str
				}
			}
			if t != "" {
				if b.Len() > 0 {
					b.WriteByte('\n')
				}
				b.WriteString(t)
			}
			return true
		})
		return b.String()
	}
	return ""
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not
// split a rune.
func cutUTF8(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maxJSONDepth bounds the nesting of metadata copied into the input.
const maxJSONDepth = 8

// jsonTerm converts a JSON value to a term directly (no Go map in
// between); nesting past maxJSONDepth becomes null.
func jsonTerm(r gjson.Result, depth int) *ast.Term {
	switch r.Type {
	case gjson.String:
		return ast.StringTerm(strings.Clone(r.Str))
	case gjson.Number:
		return ast.NumberTerm(json.Number(strings.Clone(r.Raw)))
	case gjson.True:
		return ast.InternedTerm(true)
	case gjson.False:
		return ast.InternedTerm(false)
	case gjson.JSON:
		if depth >= maxJSONDepth {
			return ast.NullTerm()
		}
		if r.IsArray() {
			var items []*ast.Term
			r.ForEach(func(_, v gjson.Result) bool {
				items = append(items, jsonTerm(v, depth+1))
				return true
			})
			return ast.ArrayTerm(items...)
		}
		var items [][2]*ast.Term
		r.ForEach(func(k, v gjson.Result) bool {
			items = append(items, [2]*ast.Term{ast.StringTerm(strings.Clone(k.Str)), jsonTerm(v, depth+1)})
			return true
		})
		return ast.ObjectTerm(items...)
	}
	return ast.NullTerm()
}

// Input returns the request-phase input document the middleware would
// build for x (portcullis policy eval --body, tests).
func (e *Engine) Input(x *pipeline.Exchange) ast.Value { return e.buildInput(x).value }
