package policy

import (
	"encoding/json"
	"strconv"
	"strings"
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
	kEstCost    = ast.StringTerm("estimated_cost")
	kFinal      = ast.StringTerm("final")
	kWindow     = ast.StringTerm("window")
	kOffset     = ast.StringTerm("offset")
)

// endpointName is the operation an endpoint serves, as policies see it.
func endpointName(d llm.Dialect) (name, path string) {
	switch d {
	case llm.OpenAIChat:
		name = "chat.completions"
	case llm.OpenAICompletion:
		name = "completions"
	case llm.OpenAIEmbedding:
		name = "embeddings"
	case llm.AnthropicMessages:
		name = "messages"
	}
	return name, d.Path()
}

// requestLine is what *fasthttp.RequestHeader offers beyond Peek.
type requestLine interface {
	Method() []byte
	RequestURI() []byte
}

// dialectTerms are the input's terms for what the dialect implies.
type dialectTerms struct{ endpoint, path, dialect *ast.Term }

var (
	kPOST        = ast.StringTerm("POST")
	emptyArray   = ast.ArrayTerm()
	dialectTable [llm.AnthropicMessages + 1]dialectTerms
	dialectNone  dialectTerms
)

func init() {
	for d := range dialectTable {
		endpoint, path := endpointName(llm.Dialect(d))
		dialectTable[d] = dialectTerms{ast.StringTerm(endpoint), ast.StringTerm(path), ast.StringTerm(llm.Dialect(d).String())}
	}
	dialectNone = dialectTable[llm.DialectNone]
}

func dialectTermsOf(d llm.Dialect) dialectTerms {
	if int(d) < len(dialectTable) {
		return dialectTable[d]
	}
	return dialectTerms{dialectNone.endpoint, dialectNone.path, ast.StringTerm(d.String())}
}

// message is one piece of prompt text and where it sits in the body.
type message struct {
	role, text string
	path       *ast.Term
}

// bodyFacts are what the input takes from the request body.
type bodyFacts struct {
	msgs                  []message
	tools                 *ast.Term
	temperature, metadata *ast.Term // nil: not in the body
	truncated             bool
	total                 int // text bytes before the cap
}

// parseBody reads the body once: messages (text only, capped), tools,
// temperature, metadata and the size figures. Text is copied out of the
// body: the request buffer is the server's and may be reused once the
// request is done.
func (e *Engine) parseBody(x *pipeline.Exchange) *bodyFacts {
	f := &bodyFacts{tools: emptyArray}
	if len(x.Body) == 0 {
		return f
	}
	root := gjson.Parse(unsafe.String(unsafe.SliceData(x.Body), len(x.Body)))
	var tools []*ast.Term
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "messages":
			i := 0
			v.ForEach(func(_, m gjson.Result) bool {
				var role string
				var content gjson.Result
				m.ForEach(func(mk, mv gjson.Result) bool {
					switch mk.Str {
					case "role":
						role = mv.Str
					case "content":
						content = mv
					}
					return true
				})
				f.msgs = append(f.msgs, message{role: roleName(role), text: contentText(content), path: messagePath(i)})
				i++
				return true
			})
		case "system":
			f.msgs = append([]message{{role: "system", text: contentText(v), path: kSystemPath}}, f.msgs...)
		case "prompt", "input":
			if x.Dialect == llm.OpenAIChat || x.Dialect == llm.AnthropicMessages {
				break
			}
			if v.IsArray() {
				i := 0
				v.ForEach(func(_, p gjson.Result) bool {
					if p.Type == gjson.String {
						f.msgs = append(f.msgs, message{role: "user", text: p.Str, path: names.get("/" + k.Str + "/" + strconv.Itoa(i))})
					}
					i++
					return true
				})
			} else if v.Type == gjson.String {
				f.msgs = append(f.msgs, message{role: "user", text: v.Str, path: names.get("/" + k.Str)})
			}
		case "tools":
			v.ForEach(func(_, t gjson.Result) bool {
				name := t.Get("function.name")
				if !name.Exists() {
					name = t.Get("name")
				}
				if name.Type == gjson.String {
					tools = append(tools, names.get(name.Str))
				}
				return true
			})
		case "temperature":
			if v.Type == gjson.Number {
				f.temperature = ast.NumberTerm(json.Number(strings.Clone(v.Raw)))
			}
		case "metadata":
			if v.IsObject() {
				f.metadata = jsonTerm(v, 0)
			}
		}
		return true
	})
	for _, m := range f.msgs {
		f.total += len(m.text)
	}
	// The cap keeps the newest text: the budget is spent from the last
	// message back, and a message that does not fit keeps its beginning.
	budget := e.s.MaxTextBytes
	for i := len(f.msgs) - 1; i >= 0; i-- {
		t := f.msgs[i].text
		if len(t) > budget {
			t = cutUTF8(t, budget)
			f.truncated = true
		}
		budget -= len(t)
		f.msgs[i].text = strings.Clone(t)
	}
	if len(tools) > 0 {
		f.tools = ast.ArrayTerm(tools...)
	}
	return f
}

var kSystemPath = ast.StringTerm("/system")

var commonRoles = [...]string{"user", "system", "assistant", "tool", "developer"}

// roleName is role as a string of its own (the body's may be reused).
func roleName(role string) string {
	for _, r := range commonRoles {
		if role == r {
			return r
		}
	}
	return string(names.get(role).Value.(ast.String))
}

// messagePaths are the paths of the first messages of a chat.
var messagePaths = func() (out [64]*ast.Term) {
	for i := range out {
		out[i] = ast.StringTerm("/messages/" + strconv.Itoa(i) + "/content")
	}
	return out
}()

func messagePath(i int) *ast.Term {
	if i < len(messagePaths) {
		return messagePaths[i]
	}
	return ast.StringTerm("/messages/" + strconv.Itoa(i) + "/content")
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
func (e *Engine) Input(x *pipeline.Exchange) ast.Value { return e.buildInput(x).materialized() }
