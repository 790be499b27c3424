package cache

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// keyOf returns the cache key of a request (every request is keyed: the
// key does not depend on eligibility).
func keyOf(t *testing.T, s config.CacheSettings, x *pipeline.Exchange) string {
	t.Helper()
	cfg, err := compile(s)
	if err != nil {
		t.Fatal(err)
	}
	var r request
	k := acquireKeyer()
	defer k.release()
	if !k.read(x, &r) {
		t.Fatalf("not an object: %s", x.Body)
	}
	key, ok := k.key(cfg, x, &r)
	if !ok {
		t.Fatalf("malformed: %s", x.Body)
	}
	return key
}

func TestKeyNormalisation(t *testing.T) {
	base := `{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`
	same := []string{
		// Key order, at every depth.
		`{"messages":[{"content":"Hello","role":"user"}],"temperature":0,"model":"gpt-4o","tools":[{"function":{"parameters":{"properties":{"b":{"type":"number"},"a":{"type":"string"}},"type":"object"},"name":"f"},"type":"function"}]}`,
		// Whitespace.
		"{ \"model\" : \"gpt-4o\",\n \"temperature\": 0, \"messages\": [ {\"role\": \"user\", \"content\": \"Hello\"} ],\n\t\"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{\"type\":\"number\"}}}}}] }",
		// Transport, attribution and gateway fields.
		`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"user":"u1","metadata":{"x":1},"tags":["a"],"fallbacks":["m2"],"num_retries":2,"cache":{"ttl":60},"mock_response":"x","temperature":0,"messages":[{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
		// Number and string spellings.
		`{"model":"gpt-4o","temperature":0.0,"messages":[{"role":"user","content":"\u0048ello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
	}
	different := []string{
		`{"model":"gpt-4o","temperature":0.5,"messages":[{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
		`{"model":"gpt-4o","temperature":0,"seed":1,"messages":[{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
		`{"model":"gpt-4o","temperature":0,"max_tokens":10,"messages":[{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
		`{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"Hello!"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
		`{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"Hello"}]}`,
		`{"model":"gpt-4o","temperature":0,"tool_choice":"required","messages":[{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
		`{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
		// Array order matters.
		`{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"Hello"},{"role":"user","content":"Hello"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}}}]}`,
	}
	s := config.CacheSettings{}
	want := keyOf(t, s, exchange(llm.OpenAIChat, base))
	for _, b := range same {
		if got := keyOf(t, s, exchange(llm.OpenAIChat, b)); got != want {
			t.Errorf("different key for an equivalent request:\n%s", b)
		}
	}
	seen := map[string]string{want: base}
	for _, b := range different {
		got := keyOf(t, s, exchange(llm.OpenAIChat, b))
		if prev, dup := seen[got]; dup {
			t.Errorf("same key for different requests:\n%s\n%s", b, prev)
		}
		seen[got] = b
	}

	// The endpoint, the model group and the caller's scope are part of it.
	if keyOf(t, s, exchange(llm.AnthropicMessages, base)) == want {
		t.Error("dialect not in the key")
	}
	if keyOf(t, s, exchange(llm.OpenAIChat, base, func(x *pipeline.Exchange) { x.RouteModel = "other" })) == want {
		t.Error("route override not in the key")
	}
	if keyOf(t, s, exchange(llm.OpenAIChat, base, team("B"))) == want {
		t.Error("team not in the key")
	}
	if keyOf(t, s, exchange(llm.OpenAIChat, base, func(x *pipeline.Exchange) { x.KeyHash = "other" })) != want {
		t.Error("team scope depends on the key")
	}
	if keyOf(t, config.CacheSettings{Scope: "global"}, exchange(llm.OpenAIChat, base, team("B"))) !=
		keyOf(t, config.CacheSettings{Scope: "global"}, exchange(llm.OpenAIChat, base)) {
		t.Error("global scope depends on the team")
	}
}

func TestKeyLargeBody(t *testing.T) {
	// Bodies past the canonical buffer are hashed in pieces: still stable.
	big := make([]byte, 0, 200<<10)
	big = append(big, `{"model":"m","temperature":0,"messages":[`...)
	for i := range 2000 {
		if i > 0 {
			big = append(big, ',')
		}
		big = append(big, `{"role":"user","content":"some text that repeats to make the body large"}`...)
	}
	big = append(big, "]}"...)
	a := keyOf(t, config.CacheSettings{}, exchange(llm.OpenAIChat, string(big)))
	b := keyOf(t, config.CacheSettings{}, exchange(llm.OpenAIChat, string(big)))
	if a != b {
		t.Fatal("unstable key")
	}
	big[len(big)-10] = 'X'
	if keyOf(t, config.CacheSettings{}, exchange(llm.OpenAIChat, string(big))) == a {
		t.Fatal("a change past the buffer did not change the key")
	}
}

func TestControlsParsing(t *testing.T) {
	var c controls
	c.fromHeader("No-Cache, no-store, max-age=30, s-maxage=20")
	if !c.noCache || !c.noStore || !c.hasMaxAge || c.maxAge.Seconds() != 20 {
		t.Fatalf("%+v", c)
	}
	c = controls{}
	c.fromHeader("max-age=abc, private")
	if c.hasMaxAge || c.noCache {
		t.Fatalf("%+v", c)
	}
}

func TestKeyRefusesMalformedAndDeep(t *testing.T) {
	cfg, _ := compile(config.CacheSettings{})
	for _, b := range []string{
		`[1,2]`, `{"a":}`, `{"a":1,}`, `{"a":"x}`, `{"a":1} x`, `{"a":tru}`, `{"a":"\q"}`,
		`{"a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
	} {
		var r request
		k := acquireKeyer()
		x := exchange(llm.OpenAIChat, `{}`)
		x.Body = []byte(b)
		ok := k.read(x, &r)
		if ok {
			_, ok = k.key(cfg, x, &r)
		}
		k.release()
		if ok {
			t.Errorf("keyed a malformed or too deep body: %.60s", b)
		}
	}
}
