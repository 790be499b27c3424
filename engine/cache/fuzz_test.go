package cache

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
)

// FuzzKeyCanonical: a body and its re-encoding by encoding/json (keys
// sorted, whitespace dropped, <>& escaped as \u003c...) have one key.
func FuzzKeyCanonical(f *testing.F) {
	for _, s := range []string{
		chatReq, benchReq,
		`{"model":"m","messages":[{"role":"user","content":"a\nb \"q\" <tag> & \u00e9 \ud83d\ude00"}],"temperature":0}`,
		`{"b":[1,2.50,{"y":null,"x":true}],"a":{"d":"e","c":-1e3}}`,
	} {
		f.Add([]byte(s))
	}
	cfg, _ := compile(config.CacheSettings{})
	key := func(b []byte) (string, bool) {
		var r request
		k := acquireKeyer()
		defer k.release()
		x := exchange(llm.OpenAIChat, `{}`)
		x.Body = b
		if !k.read(x, &r) {
			return "", false
		}
		return k.key(cfg, x, &r)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) {
			return // encoding/json rewrites invalid UTF-8; the key keeps the bytes (a miss, never a wrong hit)
		}
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		var v map[string]any
		if d.Decode(&v) != nil || d.More() {
			return
		}
		a, ok := key(body)
		if !ok {
			return // not cached: refusing is always safe
		}
		re, err := json.Marshal(v)
		if err != nil {
			return
		}
		b, ok := key(re)
		if !ok || a != b {
			t.Fatalf("different keys:\n%s\n%s", body, re)
		}
	})
}

// FuzzReplayAssemble: any stored body replays and assembles without a
// panic, and a replay always ends with its terminal event.
func FuzzReplayAssemble(f *testing.F) {
	for _, s := range []string{
		`{"id":"x","choices":[{"index":0,"message":{"content":"hi","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}`,
		`{"id":"x","choices":[{"text":"hi","index":0}]}`,
		`{"id":"m","content":[{"type":"text","text":"a","citations":[{"x":1}]},{"type":"tool_use","id":"t","name":"n","input":{"a":1}},{"type":"thinking","thinking":"t","signature":"s"},{"type":"redacted_thinking","data":"d"}],"usage":{"input_tokens":1}}`,
		`{}`, `{"choices":7,"content":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		for _, d := range []llm.Dialect{llm.OpenAIChat, llm.OpenAICompletion, llm.AnthropicMessages} {
			r := newReplay(d, body, llm.Tokens{Prompt: 1}, true)
			a := newAssembler(d)
			var last []byte
			for {
				ev, err := r.Next()
				if err != nil {
					break
				}
				if !json.Valid(ev.Data) && string(ev.Data) != "[DONE]" {
					t.Fatalf("%s: invalid event %s", d, ev.Data)
				}
				a.event(ev.Name, ev.Data)
				last = append(last[:0], ev.Data...)
			}
			if !a.done {
				t.Fatalf("%s: no terminal event (last %s)", d, last)
			}
			if out, ok := a.body(llm.Tokens{}); ok && !json.Valid(out) {
				t.Fatalf("%s: assembled invalid JSON %s", d, out)
			}
		}
	})
}
