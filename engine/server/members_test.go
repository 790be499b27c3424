package server

import (
	"testing"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"

	"github.com/tidwall/gjson"
)

// membersCases are objects whose members are easy to get wrong: escaped
// quotes and backslashes, brackets inside strings, nesting, escaped keys,
// duplicate keys, numbers and literals at the end, whitespace everywhere.
var membersCases = []string{
	`{}`,
	` { } `,
	`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`,
	"{\n\t\"a\" :\r\n 1 , \"b\":[ 1 , 2 ] ,\"c\" : { \"d\" : \"}]\" } }",
	`{"a":"x\"}","b":"\\","c":"\\\"","d":"\\\\"}`,
	`{"mod\u0065l":"m","m\"x":1,"s\\":2}`,
	`{"a":[[[{"b":"]"}]]],"c":{"d":[{},[],""]},"e":-1.5e+10}`,
	`{"a":1,"a":2,"a":{"a":3}}`,
	`{"n":null,"t":true,"f":false,"z":0}`,
	`{"a":"\u00e9\ud83d\ude00","b":"é"}`,
	`[1,2]`,
	`"str"`,
	`12`,
	// Invalid: each must be found so.
	`{"a":1,}`, `{"a" 1}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":"\x"}`,
	`{"a":"\u12g4"}`, "{\"a\":\"\x01\"}", `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":{"b"}}`, `{"a":tru}`,
	`{"a":nul}`, `{"a":1}x`, `{"a":1} }`, `{"a":1`, `{"a":[`, `{"a":{"b":[{"c":"d"}]}`, `{,}`, `{"a":1,,"b":2}`,
	`{"a":"unterminated}`, `{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
}

// checkMembers holds the walk to gjson: on any body it finds an object
// valid exactly when gjson.ValidBytes does, and on a valid one the members
// gjson's ForEach finds, with the same keys and raw values.
func checkMembers(t *testing.T, body []byte) {
	t.Helper()
	valid := gjson.ValidBytes(body)
	it, obj := newMembers(body)
	var got [][2]string
	for obj {
		k, v, ok := it.next()
		if !ok {
			break
		}
		got = append(got, [2]string{string(k), string(v)})
	}
	if !obj {
		if valid && gjson.ParseBytes(body).IsObject() {
			t.Fatalf("%q: a valid object not walked", body)
		}
		return
	}
	if it.bad == valid {
		t.Fatalf("%q: walk says valid %v, gjson %v", body, !it.bad, valid)
	}
	if !valid {
		return
	}
	var want [][2]string
	gjson.ParseBytes(body).ForEach(func(k, v gjson.Result) bool {
		want = append(want, [2]string{k.Str, v.Raw})
		return true
	})
	if len(got) != len(want) {
		t.Fatalf("%q: %d members %q, gjson %d %q", body, len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%q: member %d is %q, gjson %q", body, i, got[i], want[i])
		}
	}
}

func TestMembers(t *testing.T) {
	for _, c := range membersCases {
		checkMembers(t, []byte(c))
	}
	// The cases do exercise the walk: an object's members are found.
	it, _ := newMembers([]byte(membersCases[5]))
	if k, v, ok := it.next(); !ok || string(k) != "model" || string(v) != `"m"` {
		t.Fatalf("escaped key: %q %q %v", k, v, ok)
	}
}

// parseOracle is how parse read model, stream and max_tokens through gjson
// before it read them from their raw values: ok false when the request is
// refused for them.
func parseOracle(body []byte) (model string, stream bool, maxTokens int, ok bool) {
	var m, st gjson.Result
	gjson.ParseBytes(body).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			m = v
		case "stream":
			st = v
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			if v.Type == gjson.Number && v.Int() > 0 && (maxTokens == 0 || int(v.Int()) < maxTokens) {
				maxTokens = int(v.Int())
			}
		}
		return true
	})
	if !m.Exists() || m.Type == gjson.Null || m.Type != gjson.String || m.Str == "" {
		return "", false, 0, false
	}
	if st.Exists() && st.Type != gjson.Null && st.Type != gjson.True && st.Type != gjson.False {
		return "", false, 0, false
	}
	return m.Str, st.Type == gjson.True, maxTokens, true
}

// checkParseFields holds parse's reading of model, stream and max_tokens
// to parseOracle on any valid object.
func checkParseFields(t *testing.T, body []byte) {
	t.Helper()
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		return
	}
	model, stream, maxTokens, ok := parseOracle(body)
	x := &pipeline.Exchange{Dialect: llm.OpenAICompletion, Body: body}
	e := parse(x, nil)
	refusedForField := e != nil && (e.Param == "model" || e.Param == "stream")
	if ok == refusedForField {
		t.Fatalf("%q: parse error %v, gjson reading ok %v", body, e, ok)
	}
	if ok && e == nil && (x.Model != model || x.Stream != stream || x.MaxTokens != maxTokens) {
		t.Fatalf("%q: model %q stream %v max_tokens %d, gjson %q %v %d", body, x.Model, x.Stream, x.MaxTokens, model, stream, maxTokens)
	}
}

var parseFieldCases = []string{
	`{"model":"gpt-4o","stream":true,"max_tokens":256}`,
	`{"model":"a\"b\\c","stream":false,"max_tokens":2.7,"max_completion_tokens":1e2}`,
	`{"model":"m","model":"n","stream":null,"max_output_tokens":-3,"max_tokens":"9"}`,
	`{"model":"","stream":true}`, `{"model":null}`, `{"model":5}`, `{"stream":true}`,
	`{"model":"m","stream":"yes"}`, `{"model":"m","stream":1}`, `{"model":"m","max_tokens":12345678901}`,
	`{"model":"\u006d","max_tokens":0,"max_completion_tokens":7,"max_output_tokens":9}`,
}

func TestParseFields(t *testing.T) {
	for _, c := range parseFieldCases {
		checkParseFields(t, []byte(c))
	}
}
