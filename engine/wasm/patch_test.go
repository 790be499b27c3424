package wasm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// TestFastPatch checks the byte-splicing patch against the general
// implementation, and that it declines what it does not handle.
func TestFastPatch(t *testing.T) {
	doc := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"a@b.io"},{"role":"user","content":[{"type":"text","text":"x"}]}],"n":{"0":1},"s":"<&>"}`)
	for _, c := range []struct {
		patch string
		fast  bool
	}{
		{`[{"op":"replace","path":"/messages/0/content","value":"[EMAIL]"}]`, true},
		{`[{"op":"replace","path":"/messages/1/content/0/text","value":"y"},{"op":"replace","path":"/model","value":"m"}]`, true},
		{`[{"op":"add","path":"/model","value":{"a": [1, 2]}}]`, true},
		{`[{"op":"replace","path":"/n/0","value":2}]`, true},
		{`[{"op":"replace","path":"/s","value":"<b>"}]`, true},
		{`[{"op":"add","path":"/stream","value":true}]`, false},
		{`[{"op":"add","path":"/messages/0","value":{"role":"system","content":"s"}}]`, false},
		{`[{"op":"remove","path":"/n"}]`, false},
		{`[{"op":"replace","path":"/a~1b","value":1}]`, false},
		{`[{"op":"replace","path":"/messages/01/content","value":1}]`, false},
		{`[{"op":"replace","path":"/nope","value":1}]`, false},
		{`[{"op":"replace","path":"","value":{}}]`, false},
	} {
		r, e := decodeResult(HookRequest, []byte(`{"patch":`+c.patch+`}`))
		if e != nil {
			t.Fatalf("%s: %v", c.patch, e)
		}
		got, ok := fastPatch(doc, r.ops)
		if ok != c.fast {
			t.Errorf("%s: fast path %v, want %v", c.patch, ok, c.fast)
			continue
		}
		p, _ := jsonpatch.DecodePatch([]byte(c.patch))
		want, werr := p.ApplyWithOptions(doc, patchOptions)
		all, e := r.applyPatch(doc)
		if (werr != nil) != (e != nil) {
			t.Errorf("%s: applyPatch error %v, json-patch error %v", c.patch, e, werr)
			continue
		}
		if werr != nil {
			continue
		}
		if ok && !jsonEq(got, want) {
			t.Errorf("%s:\n fast %s\n want %s", c.patch, got, want)
		}
		if !jsonEq(all, want) {
			t.Errorf("%s:\n applyPatch %s\n want %s", c.patch, all, want)
		}
	}
	if string(doc) != `{"model":"gpt-4o","messages":[{"role":"user","content":"a@b.io"},{"role":"user","content":[{"type":"text","text":"x"}]}],"n":{"0":1},"s":"<&>"}` {
		t.Fatal("the document was modified")
	}
}

func jsonEq(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func TestDecodeResultTypes(t *testing.T) {
	for _, bad := range []string{
		`{"action":1}`, `{"route":{"model":1}}`, `{"route":{"model":"m","fallbacks":[1]}}`, `{"reject":{"status":"x"}}`,
		`{"reject":{"status":1.5}}`, `{"labels":"x"}`, `{"set_headers":{"a":1}}`, `{"drop":"yes"}`, `{"insert":[1]}`,
		`{"redactions":[{"count":"1"}]}`, `{"log":[]}`, `{"hooks":["on_boot"]}`, `{"patch":[{"op":"jump","path":"/a"}]}`,
		`{"patch":[{"op":"add","path":"/a"}]}`, `{"patch":{}}`, `{"state":"` + strings.Repeat("a", 5000) + `"}`, `{"a":1`,
	} {
		if _, e := decodeResult(HookRequest, []byte(bad)); e == nil {
			t.Errorf("%.60s: accepted", bad)
		}
	}
	r, e := decodeResult(HookStreamEvent, []byte(`{"action":"continue","state":{"k":[1]},"insert":[{"data":"[DONE]"}],"unknown":{"x":1},"drop":true}`))
	if e != nil || string(r.State) != `{"k":[1]}` || len(r.Insert) != 1 || !r.Drop {
		t.Fatalf("%+v %v", r, e)
	}
}
