package server

import (
	"testing"

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
