package openai

import (
	"testing"

	"github.com/tidwall/gjson"
)

func TestSetModel(t *testing.T) {
	for _, tc := range []struct{ in, model, want string }{
		{`{"model":"gpt","messages":[]}`, "gpt-4o", `{"model":"gpt-4o","messages":[]}`},
		{`{"messages":[],"model" : "a"}`, "b\"c", `{"messages":[],"model" : "b\"c"}`},
		{`{"model":"same"}`, "same", `{"model":"same"}`},
		{`{"messages":[]}`, "m", `{"messages":[],"model":"m"}`},
		{`{"model":null,"x":1}`, "m", `{"model":"m","x":1}`},
		{`{"nested":{"model":"no"},"model":"yes"}`, "m", `{"nested":{"model":"no"},"model":"m"}`},
	} {
		in := []byte(tc.in)
		got, err := SetModel(in, tc.model)
		if err != nil || string(got) != tc.want {
			t.Errorf("SetModel(%s, %q) = %s, %v; want %s", tc.in, tc.model, got, err, tc.want)
		}
		if string(in) != tc.in {
			t.Errorf("input modified: %s", in)
		}
	}
}

func BenchmarkSetModel(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"temperature":0.7}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := SetModel(body, "gpt-4o-2024-08-06"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestIncludeUsage(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"model":"m","stream":true}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true}`},
		{` { "model":"m"}`, ` {"stream_options":{"include_usage":true}, "model":"m"}`},
		{`{}`, `{"stream_options":{"include_usage":true}}`},
		{`{ }`, `{"stream_options":{"include_usage":true} }`},
		{`{"model":"m","stream_options":{"include_usage":false}}`, `{"model":"m","stream_options":{"include_usage":true}}`},
		{`{"model":"m","stream_options":{}}`, `{"model":"m","stream_options":{"include_usage":true}}`},
		{`{"model":"m","stream_options":{"include_usage":true}}`, `{"model":"m","stream_options":{"include_usage":true}}`},
		// The name elsewhere than as a top-level member.
		{`{"model":"m","messages":[{"role":"user","content":"what is \"stream_options\"?"}]}`,
			`{"stream_options":{"include_usage":true},"model":"m","messages":[{"role":"user","content":"what is \"stream_options\"?"}]}`},
		{`{"model":"m","metadata":{"stream_options":{"x":1}}}`, `{"stream_options":{"include_usage":true},"model":"m","metadata":{"stream_options":{"x":1}}}`},
	} {
		in := []byte(c.in)
		got := includeUsage(in)
		if string(got) != c.want {
			t.Errorf("includeUsage(%s) = %s, want %s", c.in, got, c.want)
		}
		if !gjson.ValidBytes(got) || !gjson.GetBytes(got, "stream_options.include_usage").Bool() {
			t.Errorf("includeUsage(%s) = %s: not valid JSON asking for usage", c.in, got)
		}
		if string(in) != c.in {
			t.Errorf("includeUsage modified its input: %s", in)
		}
	}
}

// setModelIncludeUsage gives what SetModel then includeUsage give, with one
// allocation when both change the body.
func TestSetModelIncludeUsage(t *testing.T) {
	for _, c := range []struct{ in, model string }{
		{`{"model":"alias","stream":true,"messages":[]}`, "gpt-4o-2024-08-06"},
		{` { "messages":[{"role":"user","content":"x"}], "model" : "a" }`, "b\"c"},
		{`{"model":"same","stream":true}`, "same"},
		{`{"messages":[]}`, "m"},
		{`{"model":null,"x":1}`, "m"},
		{`{"nested":{"model":"no"},"model":"yes"}`, "m"},
		{`{"model":"a","stream_options":{"include_usage":false}}`, "b"},
		{`{"model":"a","messages":[{"role":"user","content":"\"stream_options\""}]}`, "b"},
	} {
		in := []byte(c.in)
		got, err := setModelIncludeUsage(nil, in, c.model)
		set, err2 := SetModel([]byte(c.in), c.model)
		if err != nil || err2 != nil {
			t.Fatalf("%s: %v %v", c.in, err, err2)
		}
		want := includeUsage(set)
		if string(got) != string(want) {
			t.Errorf("setModelIncludeUsage(%s, %q) = %s, want %s", c.in, c.model, got, want)
		}
		if !gjson.ValidBytes(got) || gjson.GetBytes(got, "model").Str != c.model || !gjson.GetBytes(got, "stream_options.include_usage").Bool() {
			t.Errorf("%s: %s", c.in, got)
		}
		if string(in) != c.in {
			t.Errorf("input modified: %s", in)
		}
	}
	body := []byte(`{"model":"alias","stream":true,"messages":[{"role":"user","content":"hello"}]}`)
	if n := testing.AllocsPerRun(100, func() { _, _ = setModelIncludeUsage(nil, body, "gpt-4o-2024-08-06") }); n != 1 {
		t.Errorf("%.0f allocations for an alias's stream body, want 1", n)
	}
	// With room (an Exchange's UpstreamBuf), none.
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { _, _ = setModelIncludeUsage(buf, body, "gpt-4o-2024-08-06") }); n != 0 {
		t.Errorf("%.0f allocations for an alias's stream body with room, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = setModelIncludeUsage(buf, body, "alias") }); n != 0 {
		t.Errorf("%.0f allocations for a stream body with room, want 0", n)
	}
}
