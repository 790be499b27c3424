package server

import (
	"testing"
	"unsafe"

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
}

// checkMembers compares members with gjson's ForEach on a valid object.
func checkMembers(t *testing.T, body []byte) {
	t.Helper()
	if !gjson.ValidBytes(body) {
		return
	}
	root := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	it, ok := newMembers(body)
	if ok != root.IsObject() {
		t.Fatalf("%q: object %v, gjson %v", body, ok, root.IsObject())
	}
	if !ok {
		return
	}
	var want [][2]string
	root.ForEach(func(k, v gjson.Result) bool {
		want = append(want, [2]string{k.Str, v.Raw})
		return true
	})
	var got [][2]string
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		got = append(got, [2]string{string(k), string(v)})
	}
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
