package admin

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
)

const master = "sk-master"

// env is one API over one store with a real keys.Manager.
type env struct {
	t    *testing.T
	st   store.Store
	fake *fakeStore // nil on SQLite
	dir  string     // the SQLite directory
	km   *keys.Manager
	api  *API

	mu     sync.Mutex
	audits []store.AuditRecord
}

// stores runs fn once on the in-memory fake and once on SQLite.
func stores(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, kind := range []string{"fake", "sqlite"} {
		t.Run(kind, func(t *testing.T) { fn(t, newEnv(t, kind, true)) })
	}
}

func newEnv(t *testing.T, kind string, withKeys bool) *env {
	t.Helper()
	e := &env{t: t}
	switch kind {
	case "fake":
		e.fake = newFakeStore()
		e.st = e.fake
	case "sqlite":
		e.dir = t.TempDir()
		s, err := sqlite.Open(filepath.Join(e.dir, "portcullis.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		e.st = s
	}
	o := Options{Store: e.st, MasterKey: master, Audit: func(r store.AuditRecord) {
		e.mu.Lock()
		e.audits = append(e.audits, r)
		e.mu.Unlock()
	}}
	if withKeys {
		km, err := keys.New(keys.Options{Store: e.st, MasterKey: master, CacheKeys: 1000})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(km.Close)
		e.km, o.Keys = km, km
	}
	e.api = New(o)
	return e
}

// call runs one request with cred as the bearer token.
func (e *env) call(cred, method, path, body string) (int, []byte) {
	e.t.Helper()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	if cred != "" {
		ctx.Request.Header.Set("Authorization", "Bearer "+cred)
	}
	if body != "" {
		ctx.Request.Header.SetContentType("application/json")
		ctx.Request.SetBodyString(body)
	}
	e.api.Handle(&ctx)
	return ctx.Response.StatusCode(), append([]byte(nil), ctx.Response.Body()...)
}

// ok runs a master-key call that must answer 200 and decodes the body.
func (e *env) ok(method, path, body string) map[string]any {
	e.t.Helper()
	code, b := e.call(master, method, path, body)
	if code != 200 {
		e.t.Fatalf("%s %s %s: %d %s", method, path, body, code, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
	return m
}

func (e *env) okList(method, path string) []any {
	e.t.Helper()
	code, b := e.call(master, method, path, "")
	if code != 200 {
		e.t.Fatalf("%s %s: %d %s", method, path, code, b)
	}
	var l []any
	if err := json.Unmarshal(b, &l); err != nil {
		e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
	return l
}

// fail runs a master-key call that must fail with status and, when param
// is not "", name param; it returns the OpenAI error object.
func (e *env) fail(status int, param, method, path, body string) map[string]any {
	e.t.Helper()
	code, b := e.call(master, method, path, body)
	var m struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Error == nil {
		e.t.Fatalf("%s %s %s: not an OpenAI error: %d %s", method, path, body, code, b)
	}
	if code != status {
		e.t.Fatalf("%s %s %s: status %d, want %d: %s", method, path, body, code, status, b)
	}
	if param != "" && m.Error["param"] != param {
		e.t.Fatalf("%s %s %s: param %v, want %q: %s", method, path, body, m.Error["param"], param, b)
	}
	for _, f := range []string{"message", "type", "code"} {
		if _, ok := m.Error[f]; !ok {
			e.t.Fatalf("error without %q: %s", f, b)
		}
	}
	return m.Error
}

// serve runs a request for model with key through the keys stage and
// returns its error (nil: admitted). cost, when > 0, is settled.
func (e *env) serve(key, model string, cost store.Nano) error {
	e.t.Helper()
	var h fasthttp.RequestHeader
	h.Set("Authorization", "Bearer "+key)
	x := &pipeline.Exchange{Ctx: context.Background(), Header: &h, Model: model}
	err := e.km.Serve(x, func(*pipeline.Exchange) error { return nil })
	if x.Settler != nil {
		x.Cost = cost
		x.Settler.Settle(x)
	}
	return err
}

func (e *env) mustServe(key, model string) {
	e.t.Helper()
	if err := e.serve(key, model, 0); err != nil {
		e.t.Fatalf("serve %s with %s: %v", model, keyName(displayPrefix(key)), err)
	}
}

func (e *env) mustRefuse(status int, key, model string) *errs.Error {
	e.t.Helper()
	err := e.serve(key, model, 0)
	if err == nil {
		e.t.Fatalf("serve %s with %s: admitted, want %d", model, keyName(displayPrefix(key)), status)
	}
	x := errs.From(err)
	if x.Status != status {
		e.t.Fatalf("serve %s: %d %s, want %d", model, x.Status, x.Message, status)
	}
	return x
}

// stored reports whether s appears anywhere the store keeps data.
func (e *env) stored(s string) bool {
	e.t.Helper()
	if e.fake != nil {
		return strings.Contains(e.fake.dump(), s)
	}
	ents, err := os.ReadDir(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(e.dir, ent.Name()))
		if err != nil {
			e.t.Fatal(err)
		}
		if strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

func (e *env) auditLog() []store.AuditRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]store.AuditRecord(nil), e.audits...)
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func obj(m map[string]any, k string) map[string]any {
	o, _ := m[k].(map[string]any)
	return o
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// The curl example from the docs, exactly.
func TestGenerateDocExample(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		before := time.Now().UTC()
		g := e.ok("POST", "/key/generate", `{"max_budget": 50.00, "budget_duration": "monthly", "metadata": {"team": "product-engineering"}}`)
		secret := str(g, "key")
		if !strings.HasPrefix(secret, "sk-") || len(secret) < 40 {
			t.Fatalf("key = %q", secret)
		}
		if g["max_budget"] != 50.0 || g["budget_duration"] != "monthly" {
			t.Fatalf("max_budget %v budget_duration %v", g["max_budget"], g["budget_duration"])
		}
		if mustJSON(g["metadata"]) != `{"team":"product-engineering"}` {
			t.Fatalf("metadata = %s", mustJSON(g["metadata"]))
		}
		created, err := time.Parse(time.RFC3339Nano, str(g, "created_at"))
		if err != nil || created.Before(before.Add(-time.Second)) {
			t.Fatalf("created_at %q: %v", str(g, "created_at"), err)
		}
		y, m, _ := created.Date()
		want := time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
		if got, err := time.Parse(time.RFC3339Nano, str(g, "budget_reset_at")); err != nil || !got.Equal(want) {
			t.Fatalf("budget_reset_at = %q, want %s", str(g, "budget_reset_at"), want)
		}
		if str(g, "token") != keys.Hash(secret) || str(g, "token_id") != keys.Hash(secret) {
			t.Fatalf("token %q token_id %q, want the hash", str(g, "token"), str(g, "token_id"))
		}
		if str(g, "key_name") != "sk-..."+secret[len(secret)-4:] {
			t.Fatalf("key_name = %q", str(g, "key_name"))
		}
		if g["spend"] != 0.0 || g["expires"] != nil || g["blocked"] != false {
			t.Fatalf("spend %v expires %v blocked %v", g["spend"], g["expires"], g["blocked"])
		}
		if e.stored(secret) {
			t.Fatal("the secret is in the store")
		}
		if !e.stored(keys.Hash(secret)) {
			t.Fatal("the hash is not in the store")
		}
		e.mustServe(secret, "gpt-4o")

		k, err := e.st.GetKey(context.Background(), keys.Hash(secret))
		if err != nil {
			t.Fatal(err)
		}
		if *k.Limits.MaxBudget != 50*store.NanoPerUSD || k.Limits.BudgetDuration != "monthly" || !k.Limits.BudgetResetAt.Equal(want) {
			t.Fatalf("stored limits %+v", k.Limits)
		}
		if k.Prefix != secret[:7]+"..."+secret[len(secret)-4:] {
			t.Fatalf("prefix %q", k.Prefix)
		}
	})
}

func TestKeyLifecycle(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		g := e.ok("POST", "/key/generate", `{"key_alias": "ci", "models": ["gpt-4o", "claude-*"], "duration": "1h", "rpm_limit": 100, "tpm_limit": 5000, "max_parallel_requests": 4, "user_id": "u-1", "tags": ["ci"]}`)
		secret := str(g, "key")
		exp, err := time.Parse(time.RFC3339Nano, str(g, "expires"))
		if err != nil || time.Until(exp) < 59*time.Minute || time.Until(exp) > time.Hour+time.Minute {
			t.Fatalf("expires = %q", str(g, "expires"))
		}
		if g["rpm_limit"] != 100.0 || g["tpm_limit"] != 5000.0 || g["max_parallel_requests"] != 4.0 || str(g, "user_id") != "u-1" {
			t.Fatalf("limits not echoed: %v", g)
		}
		if mustJSON(obj(g, "metadata")["tags"]) != `["ci"]` || mustJSON(g["tags"]) != `["ci"]` {
			t.Fatalf("tags: metadata %v tags %v", g["metadata"], g["tags"])
		}
		e.mustServe(secret, "claude-3-5-sonnet")
		e.mustRefuse(403, secret, "gpt-3.5-turbo")

		// info, by secret and by hash
		for _, k := range []string{secret, keys.Hash(secret)} {
			info := e.ok("GET", "/key/info?key="+k, "")
			if str(info, "key") != k || str(obj(info, "info"), "key_alias") != "ci" {
				t.Fatalf("info = %v", info)
			}
			if _, ok := obj(info, "info")["token"]; ok {
				t.Fatal("key/info shows the hash")
			}
		}

		// update: only the given fields change
		u := e.ok("POST", "/key/update", `{"key": "`+secret+`", "max_budget": 10, "models": ["gpt-4o-mini"], "metadata": {"env": "prod"}}`)
		if u["max_budget"] != 10.0 || u["rpm_limit"] != 100.0 || str(u, "key_alias") != "ci" || str(u, "key") != secret {
			t.Fatalf("update = %v", u)
		}
		if mustJSON(u["models"]) != `["gpt-4o-mini"]` || mustJSON(u["metadata"]) != `{"env":"prod"}` {
			t.Fatalf("update models %v metadata %v", u["models"], u["metadata"])
		}
		e.mustServe(secret, "gpt-4o-mini")
		e.mustRefuse(403, secret, "claude-3-5-sonnet") // takes effect at once

		// block / unblock
		b := e.ok("POST", "/key/block", `{"key": "`+secret+`"}`)
		if b["blocked"] != true {
			t.Fatalf("block = %v", b)
		}
		e.mustRefuse(401, secret, "gpt-4o-mini")
		if info := e.ok("GET", "/key/info?key="+secret, ""); obj(info, "info")["blocked"] != true {
			t.Fatal("info does not show blocked")
		}
		e.ok("POST", "/key/unblock", `{"key": "`+keys.Hash(secret)+`"}`)
		e.mustServe(secret, "gpt-4o-mini")

		// regenerate: the old key stops at once, the new one works, the
		// rest of the key stays
		r := e.ok("POST", "/key/regenerate", `{"key": "`+secret+`"}`)
		secret2 := str(r, "key")
		if secret2 == secret || !strings.HasPrefix(secret2, "sk-") || str(r, "token") != keys.Hash(secret2) {
			t.Fatalf("regenerate = %v", r)
		}
		if r["max_budget"] != 10.0 || str(r, "key_alias") != "ci" {
			t.Fatalf("regenerate lost fields: %v", r)
		}
		e.mustRefuse(401, secret, "gpt-4o-mini")
		e.mustServe(secret2, "gpt-4o-mini")
		e.fail(404, "key", "GET", "/key/info?key="+secret, "")

		// regenerate through the path, with an update
		r = e.ok("POST", "/key/"+secret2+"/regenerate", `{"max_budget": 20}`)
		secret3 := str(r, "key")
		if r["max_budget"] != 20.0 {
			t.Fatalf("path regenerate = %v", r)
		}
		e.mustRefuse(401, secret2, "gpt-4o-mini")
		e.mustServe(secret3, "gpt-4o-mini")
		if info := e.ok("GET", "/key/info?key="+secret3, ""); obj(info, "info")["max_budget"] != 20.0 {
			t.Fatalf("regenerate update not stored: %v", info)
		}

		// delete
		d := e.ok("POST", "/key/delete", `{"keys": ["`+secret3+`"]}`)
		if mustJSON(d["deleted_keys"]) != `["`+secret3+`"]` {
			t.Fatalf("delete = %v", d)
		}
		e.mustRefuse(401, secret3, "gpt-4o-mini")
		e.fail(404, "key", "GET", "/key/info?key="+secret3, "")
		e.fail(404, "keys", "POST", "/key/delete", `{"keys": ["`+secret3+`"]}`)
	})
}

func TestKeyUpdateNulls(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		g := e.ok("POST", "/key/generate", `{"key_alias": "a1", "max_budget": 5, "soft_budget": 4, "budget_duration": "1d", "duration": "30d", "rpm_limit": 7, "model_rpm_limit": {"gpt-4o": 3}}`)
		secret := str(g, "key")
		if str(g, "budget_reset_at") == "" || str(g, "expires") == "" || g["soft_budget"] != 4.0 {
			t.Fatalf("generate = %v", g)
		}
		if mustJSON(g["model_rpm_limit"]) != `{"gpt-4o":3}` || mustJSON(obj(g, "metadata")["model_rpm_limit"]) != `{"gpt-4o":3}` {
			t.Fatalf("model_rpm_limit = %v, metadata %v", g["model_rpm_limit"], g["metadata"])
		}
		u := e.ok("POST", "/key/update", `{"key": "`+secret+`", "max_budget": null, "budget_duration": null, "key_alias": null, "duration": "-1", "model_rpm_limit": null}`)
		for _, f := range []string{"max_budget", "budget_duration", "budget_reset_at", "key_alias", "expires", "model_rpm_limit"} {
			if u[f] != nil {
				t.Errorf("%s = %v after null", f, u[f])
			}
		}
		if u["rpm_limit"] != 7.0 || u["soft_budget"] != 4.0 {
			t.Errorf("absent fields changed: %v", u)
		}
		k, _ := e.st.GetKey(context.Background(), keys.Hash(secret))
		if k.Limits.MaxBudget != nil || k.ExpiresAt != nil || k.KeyAlias != "" || k.Limits.ModelRPMLimit != nil {
			t.Errorf("stored = %+v", k)
		}
		// model limits given inside metadata, LiteLLM's storage
		u = e.ok("POST", "/key/update", `{"key": "`+secret+`", "metadata": {"app": "x", "model_tpm_limit": {"gpt-4o": 1000}}}`)
		k, _ = e.st.GetKey(context.Background(), keys.Hash(secret))
		if k.Limits.ModelTPMLimit["gpt-4o"] != 1000 || strings.Contains(string(k.Metadata), "model_tpm_limit") {
			t.Errorf("model_tpm_limit from metadata: limits %+v metadata %s", k.Limits, k.Metadata)
		}
		if mustJSON(u["metadata"]) != `{"app":"x","model_tpm_limit":{"gpt-4o":1000}}` {
			t.Errorf("metadata out = %s", mustJSON(u["metadata"]))
		}
		// budget_duration set again restarts the period
		u = e.ok("POST", "/key/update", `{"key": "`+secret+`", "budget_duration": "30s"}`)
		if at, err := time.Parse(time.RFC3339Nano, str(u, "budget_reset_at")); err != nil || time.Until(at) > 31*time.Second || time.Until(at) < 20*time.Second {
			t.Errorf("budget_reset_at = %q", str(u, "budget_reset_at"))
		}
	})
}

func TestModelMaxBudget(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		g := e.ok("POST", "/key/generate", `{"model_max_budget": {"gpt-4o": {"budget_limit": 0.5, "time_period": "30d"}, "gpt-4o-mini": 0.25, "o1": {"budget_limit": "1.5"}}}`)
		k, err := e.st.GetKey(context.Background(), keys.Hash(str(g, "key")))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]store.Nano{"gpt-4o": 500_000_000, "gpt-4o-mini": 250_000_000, "o1": 1_500_000_000}
		if mustJSON(k.Limits.ModelMaxBudget) != mustJSON(want) {
			t.Fatalf("model budgets %v", k.Limits.ModelMaxBudget)
		}
		if obj(obj(g, "model_max_budget"), "gpt-4o")["budget_limit"] != 0.5 {
			t.Fatalf("model_max_budget out = %v", g["model_max_budget"])
		}
		e.fail(400, "model_max_budget", "POST", "/key/generate", `{"model_max_budget": {"gpt-4o": {"budget_limit": 1, "time_period": "soon"}}}`)
		e.fail(400, "model_max_budget", "POST", "/key/generate", `{"model_max_budget": {"gpt-4o": "lots"}}`)
		e.fail(400, "model_max_budget", "POST", "/key/generate", `{"model_max_budget": {"gpt-4o": -1}}`)
	})
}

func TestCustomKey(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		const custom = "sk-my-own-key-0123456789abcdef"
		g := e.ok("POST", "/key/generate", `{"key": "`+custom+`"}`)
		if str(g, "key") != custom || str(g, "key_name") != "sk-...cdef" {
			t.Fatalf("generate = %v", g)
		}
		e.mustServe(custom, "gpt-4o")
		if e.stored(custom) {
			t.Fatal("the caller's key is stored")
		}
		e.fail(400, "key", "POST", "/key/generate", `{"key": "`+custom+`"}`)
		e.fail(400, "key", "POST", "/key/generate", `{"key": "pk-not-a-litellm-key"}`)
		e.fail(400, "key", "POST", "/key/generate", `{"key": "`+master+`"}`)
		// a short key keeps less than 7+4 characters
		g = e.ok("POST", "/key/generate", `{"key": "sk-12345678"}`)
		k, _ := e.st.GetKey(context.Background(), keys.Hash("sk-12345678"))
		if k.Prefix != "sk-..." || str(g, "key_name") != "sk-..." {
			t.Fatalf("short key prefix %q key_name %q", k.Prefix, str(g, "key_name"))
		}
	})
}

func TestKeyAliasAndList(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		e.ok("POST", "/team/new", `{"team_id": "t1"}`)
		var secrets []string
		for _, a := range []string{"k1", "k2", "k3"} {
			g := e.ok("POST", "/key/generate", `{"team_id": "t1", "key_alias": "`+a+`"}`)
			secrets = append(secrets, str(g, "key"))
		}
		e.ok("POST", "/key/generate", `{"key_alias": "other"}`)
		e.fail(400, "key_alias", "POST", "/key/generate", `{"key_alias": "k1"}`)
		e.fail(400, "key_alias", "POST", "/key/update", `{"key": "`+secrets[1]+`", "key_alias": "k1"}`)
		e.ok("POST", "/key/update", `{"key": "`+secrets[0]+`", "key_alias": "k1"}`) // its own alias

		l := e.ok("GET", "/key/list?team_id=t1&size=2", "")
		if l["total_count"] != 3.0 || l["total_pages"] != 2.0 || l["current_page"] != 1.0 || len(l["keys"].([]any)) != 2 {
			t.Fatalf("list = %v", l)
		}
		seen := map[string]bool{}
		for _, h := range l["keys"].([]any) {
			seen[h.(string)] = true
		}
		l = e.ok("GET", "/key/list?team_id=t1&size=2&page=2&return_full_object=true", "")
		ks := l["keys"].([]any)
		if len(ks) != 1 || !strings.HasPrefix(str(ks[0].(map[string]any), "key_alias"), "k") {
			t.Fatalf("page 2 = %v", l)
		}
		seen[str(ks[0].(map[string]any), "token")] = true
		for _, s := range secrets {
			if !seen[keys.Hash(s)] {
				t.Fatalf("pages miss %s: %v", keyName(displayPrefix(s)), seen)
			}
		}
		if l := e.ok("GET", "/key/list", ""); l["total_count"] != 4.0 {
			t.Fatalf("all = %v", l)
		}
		if l := e.ok("GET", "/key/list?key_alias=k2", ""); l["total_count"] != 1.0 || l["keys"].([]any)[0] != keys.Hash(secrets[1]) {
			t.Fatalf("by alias = %v", l)
		}
		e.fail(400, "size", "GET", "/key/list?size=1000", "")
		e.fail(400, "page", "GET", "/key/list?page=0", "")

		d := e.ok("POST", "/key/delete", `{"key_aliases": ["k2", "k3"]}`)
		if mustJSON(d["deleted_keys"]) != `["k2","k3"]` {
			t.Fatalf("delete = %v", d)
		}
		e.mustRefuse(401, secrets[1], "gpt-4o")
		e.mustRefuse(401, secrets[2], "gpt-4o")
		e.mustServe(secrets[0], "gpt-4o")
		e.fail(404, "key_aliases", "POST", "/key/delete", `{"key_aliases": ["k2"]}`)
		e.fail(400, "keys", "POST", "/key/delete", `{}`)
	})
}

func TestTeamRestrictsKeyModels(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		e.ok("POST", "/team/new", `{"team_id": "eng", "models": ["gpt-4o", "claude-*"]}`)
		e.fail(400, "models", "POST", "/key/generate", `{"team_id": "eng", "models": ["gpt-3.5-turbo"]}`)
		e.fail(400, "models", "POST", "/key/generate", `{"team_id": "eng", "models": ["gpt-4o", "o1"]}`)
		e.fail(400, "team_id", "POST", "/key/generate", `{"team_id": "nope"}`)
		g := e.ok("POST", "/key/generate", `{"team_id": "eng", "models": ["gpt-4o", "claude-3-5-sonnet"]}`)
		secret := str(g, "key")
		e.mustServe(secret, "claude-3-5-sonnet")
		// a key without models gets the team's
		g = e.ok("POST", "/key/generate", `{"team_id": "eng"}`)
		e.mustServe(str(g, "key"), "gpt-4o")
		e.mustRefuse(403, str(g, "key"), "o1")
		// updating a team key's models is checked too
		e.fail(400, "models", "POST", "/key/update", `{"key": "`+secret+`", "models": ["o1"]}`)
		// and moving a key to a team
		other := str(e.ok("POST", "/key/generate", `{"models": ["o1"]}`), "key")
		e.fail(400, "models", "POST", "/key/update", `{"key": "`+other+`", "team_id": "eng"}`)
	})
}

func TestTeams(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		e.ok("POST", "/user/new", `{"user_id": "ann", "user_email": "ann@example.com", "auto_create_key": false}`)
		tm := e.ok("POST", "/team/new", `{"team_alias": "Platform", "max_budget": 100, "budget_duration": "30d", "rpm_limit": 1000, "metadata": {"cost_center": "42"},
			"members_with_roles": [{"role": "admin", "user_id": "ann"}, {"role": "user", "user_email": "bob@example.com"}]}`)
		id := str(tm, "team_id")
		if len(id) != 36 || str(tm, "team_alias") != "Platform" || tm["max_budget"] != 100.0 || str(tm, "budget_reset_at") == "" {
			t.Fatalf("team/new = %v", tm)
		}
		members := tm["members_with_roles"].([]any)
		if len(members) != 2 || str(members[0].(map[string]any), "role") != "admin" {
			t.Fatalf("members = %v", members)
		}
		bob := str(members[1].(map[string]any), "user_id")
		if bob == "" {
			t.Fatal("the email-only member got no user id")
		}
		// the members' users know their team; bob was created
		for _, u := range []string{"ann", bob} {
			ui := e.ok("GET", "/user/info?user_id="+u, "")
			if mustJSON(obj(ui, "user_info")["teams"]) != `["`+id+`"]` || len(ui["teams"].([]any)) != 1 {
				t.Fatalf("user %s = %v", u, ui)
			}
		}
		e.fail(400, "team_id", "POST", "/team/new", `{"team_id": "`+id+`"}`)
		e.fail(400, "members_with_roles", "POST", "/team/new", `{"members_with_roles": [{"role": "owner", "user_id": "x"}]}`)
		e.fail(400, "members_with_roles", "POST", "/team/new", `{"members_with_roles": [{"role": "user"}]}`)

		secret := str(e.ok("POST", "/key/generate", `{"team_id": "`+id+`", "key_alias": "team-key"}`), "key")
		e.mustServe(secret, "gpt-4o")

		info := e.ok("GET", "/team/info?team_id="+id, "")
		if str(info, "team_id") != id || str(obj(info, "team_info"), "team_alias") != "Platform" || len(info["keys"].([]any)) != 1 {
			t.Fatalf("team/info = %v", info)
		}
		if str(info["keys"].([]any)[0].(map[string]any), "key_alias") != "team-key" {
			t.Fatalf("team/info keys = %v", info["keys"])
		}
		e.fail(404, "team_id", "GET", "/team/info?team_id=nope", "")
		e.fail(400, "team_id", "GET", "/team/info", "")

		if err := e.serve(secret, "gpt-4o", 500_000_000); err != nil {
			t.Fatal(err)
		}
		if info := e.ok("GET", "/team/info?team_id="+id, ""); obj(info, "team_info")["spend"] != 0.5 {
			t.Fatalf("team live spend = %v", obj(info, "team_info")["spend"])
		}
		up := e.ok("POST", "/team/update", `{"team_id": "`+id+`", "max_budget": 0.25, "team_alias": "Platform 2"}`)
		if str(up, "team_id") != id || obj(up, "data")["max_budget"] != 0.25 || str(obj(up, "data"), "team_alias") != "Platform 2" || obj(up, "data")["rpm_limit"] != 1000.0 {
			t.Fatalf("team/update = %v", up)
		}
		// a team budget under the team's spend stops its keys at once
		if x := e.mustRefuse(400, secret, "gpt-4o"); x.Code != errs.CodeBudgetExceeded {
			t.Fatalf("budget refusal %v", x)
		}
		e.ok("POST", "/team/update", `{"team_id": "`+id+`", "max_budget": null}`)
		e.mustServe(secret, "gpt-4o")
		e.fail(404, "team_id", "POST", "/team/update", `{"team_id": "nope", "max_budget": 1}`)

		// member_add: one, a list, a duplicate
		ma := e.ok("POST", "/team/member_add", `{"team_id": "`+id+`", "member": {"role": "user", "user_id": "carl"}}`)
		if len(ma["members_with_roles"].([]any)) != 3 || len(ma["updated_users"].([]any)) != 1 {
			t.Fatalf("member_add = %v", ma)
		}
		ma = e.ok("POST", "/team/member_add", `{"team_id": "`+id+`", "member": [{"role": "user", "user_id": "dan"}, {"role": "admin", "user_email": "eve@example.com"}]}`)
		if len(ma["members_with_roles"].([]any)) != 5 {
			t.Fatalf("member_add list = %v", ma)
		}
		e.fail(400, "member", "POST", "/team/member_add", `{"team_id": "`+id+`", "member": {"role": "user", "user_id": "carl"}}`)
		e.fail(404, "team_id", "POST", "/team/member_add", `{"team_id": "nope", "member": {"role": "user", "user_id": "carl"}}`)
		if ui := e.ok("GET", "/user/info?user_id=carl", ""); mustJSON(obj(ui, "user_info")["teams"]) != `["`+id+`"]` {
			t.Fatalf("carl = %v", ui)
		}

		// list, and by member
		if zz := e.ok("POST", "/team/new", `{"team_id": "zz", "team_alias": "Zeta"}`); mustJSON(zz["metadata"]) != `{}` {
			t.Fatalf("empty metadata = %s", mustJSON(zz["metadata"]))
		}
		if zz := e.ok("GET", "/team/info?team_id=zz", ""); mustJSON(obj(zz, "team_info")["metadata"]) != `{}` {
			t.Fatalf("empty metadata read back = %s", mustJSON(obj(zz, "team_info")["metadata"]))
		}
		if l := e.okList("GET", "/team/list"); len(l) != 2 || str(l[0].(map[string]any), "team_alias") != "Platform 2" || len(l[0].(map[string]any)["keys"].([]any)) != 1 {
			t.Fatalf("team/list = %v", l)
		}
		if l := e.okList("GET", "/team/list?user_id=dan"); len(l) != 1 || str(l[0].(map[string]any), "team_id") != id {
			t.Fatalf("team/list?user_id = %v", l)
		}

		// block
		e.ok("POST", "/team/block", `{"team_id": "`+id+`"}`)
		e.mustRefuse(401, secret, "gpt-4o")
		e.ok("POST", "/team/unblock", `{"team_id": "`+id+`"}`)
		e.mustServe(secret, "gpt-4o")

		// delete: the team's keys go too
		d := e.ok("POST", "/team/delete", `{"team_ids": ["`+id+`"]}`)
		if mustJSON(d["deleted_teams"]) != `["`+id+`"]` {
			t.Fatalf("team/delete = %v", d)
		}
		e.mustRefuse(401, secret, "gpt-4o")
		e.fail(404, "team_id", "GET", "/team/info?team_id="+id, "")
		e.fail(404, "key", "GET", "/key/info?key="+secret, "")
		if ui := e.ok("GET", "/user/info?user_id=ann", ""); mustJSON(obj(ui, "user_info")["teams"]) != `[]` {
			t.Fatalf("ann after delete = %v", ui)
		}
		e.fail(404, "team_ids", "POST", "/team/delete", `{"team_ids": ["`+id+`"]}`)
		e.fail(400, "team_ids", "POST", "/team/delete", `{}`)
	})
}

func TestUsers(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		e.ok("POST", "/team/new", `{"team_id": "t1", "models": ["gpt-4o"]}`)
		nu := e.ok("POST", "/user/new", `{"user_id": "u1", "user_email": "u1@example.com", "user_role": "internal_user", "models": ["gpt-4o"], "max_budget": 2, "budget_duration": "monthly", "teams": ["t1"], "metadata": {"dept": "r&d"}, "key_alias": "u1-key"}`)
		secret := str(nu, "key")
		if !strings.HasPrefix(secret, "sk-") || str(nu, "user_id") != "u1" || nu["max_budget"] != 2.0 || str(nu, "key_alias") != "u1-key" {
			t.Fatalf("user/new = %v", nu)
		}
		if str(nu, "token") != keys.Hash(secret) || mustJSON(nu["teams"]) != `["t1"]` || mustJSON(nu["metadata"]) != `{"dept":"r\u0026d"}` {
			t.Fatalf("user/new = %v", nu)
		}
		if e.stored(secret) {
			t.Fatal("the user's key is stored")
		}
		e.mustServe(secret, "gpt-4o")
		e.mustRefuse(403, secret, "o1") // the user's models

		ui := e.ok("GET", "/user/info?user_id=u1", "")
		if str(ui, "user_id") != "u1" || len(ui["keys"].([]any)) != 1 || len(ui["teams"].([]any)) != 1 {
			t.Fatalf("user/info = %v", ui)
		}
		if k := ui["keys"].([]any)[0].(map[string]any); str(k, "token") != keys.Hash(secret) || str(k, "user_id") != "u1" {
			t.Fatalf("user/info key = %v", k)
		}
		if info := e.ok("GET", "/team/info?team_id=t1", ""); len(obj(info, "team_info")["members_with_roles"].([]any)) != 1 {
			t.Fatalf("the user did not join t1: %v", info)
		}

		// the user's budget applies to the key at once
		if err := e.serve(secret, "gpt-4o", 100_000_000); err != nil {
			t.Fatal(err)
		}
		e.ok("POST", "/user/update", `{"user_id": "u1", "max_budget": 0.05}`)
		e.mustRefuse(400, secret, "gpt-4o")
		up := e.ok("POST", "/user/update", `{"user_email": "u1@example.com", "max_budget": null, "user_role": "internal_user_viewer"}`)
		if str(obj(up, "data"), "user_role") != "internal_user_viewer" || obj(up, "data")["max_budget"] != nil {
			t.Fatalf("user/update = %v", up)
		}
		e.mustServe(secret, "gpt-4o")

		nu = e.ok("POST", "/user/new", `{"user_email": "x@example.com", "auto_create_key": false}`)
		if str(nu, "key") != "" || len(str(nu, "user_id")) != 36 || str(nu, "user_role") != "internal_user" {
			t.Fatalf("user/new without key = %v", nu)
		}
		e.fail(400, "user_id", "POST", "/user/new", `{"user_id": "u1"}`)
		e.fail(404, "teams", "POST", "/user/new", `{"user_id": "u2", "teams": ["nope"]}`)
		e.fail(400, "user_role", "POST", "/user/new", `{"user_id": "u2", "user_role": "god"}`)
		e.fail(404, "user_id", "GET", "/user/info?user_id=nope", "")
		e.fail(400, "user_id", "GET", "/user/info", "")
		e.fail(400, "key_alias", "POST", "/user/new", `{"user_id": "u3", "key_alias": "u1-key"}`)
		if _, err := e.st.GetUser(context.Background(), "u3"); err == nil {
			t.Fatal("a refused /user/new created its user")
		}

		l := e.ok("GET", "/user/list?page_size=1", "")
		if l["total"] != 2.0 || len(l["users"].([]any)) != 1 || l["total_pages"] != 2.0 {
			t.Fatalf("user/list = %v", l)
		}
	})
}

func TestAuthAndRouting(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		secret := str(e.ok("POST", "/key/generate", `{}`), "key")
		for _, cred := range []string{"", "sk-wrong", secret} {
			code, b := e.call(cred, "POST", "/key/generate", `{}`)
			var m struct {
				Error struct {
					Type string `json:"type"`
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(b, &m); err != nil || code != 401 || m.Error.Type != "authentication_error" || m.Error.Code != "invalid_api_key" {
				t.Fatalf("cred %q: %d %s", cred, code, b)
			}
		}
		// x-api-key and api-key carry the master key too
		for _, h := range []string{"x-api-key", "api-key"} {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetMethod("GET")
			ctx.Request.SetRequestURI("/key/list")
			ctx.Request.Header.Set(h, master)
			e.api.Handle(&ctx)
			if ctx.Response.StatusCode() != 200 {
				t.Fatalf("%s: %d %s", h, ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
		e.fail(404, "", "GET", "/key/nothing", "")
		e.fail(404, "", "POST", "/team/frobnicate", "{}")
		e.fail(405, "", "GET", "/key/generate", "")
		e.fail(405, "", "POST", "/key/info", "")
		e.fail(400, "", "POST", "/key/generate", `{"max_budget": `)
		e.fail(400, "", "POST", "/key/generate", `[1, 2]`)

		// no master key configured: everything is refused
		api := New(Options{Store: e.st})
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("GET")
		ctx.Request.SetRequestURI("/key/list")
		ctx.Request.Header.Set("Authorization", "Bearer ")
		api.Handle(&ctx)
		if ctx.Response.StatusCode() != 401 {
			t.Fatalf("no master key: %d", ctx.Response.StatusCode())
		}
	})
}

func TestValidation(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		for _, c := range []struct{ param, body string }{
			{"max_budget", `{"max_budget": "fifty"}`},
			{"max_budget", `{"max_budget": -1}`},
			{"soft_budget", `{"soft_budget": true}`},
			{"models", `{"models": "gpt-4o"}`},
			{"models", `{"models": ["gpt-4o", 4]}`},
			{"rpm_limit", `{"rpm_limit": 1.5}`},
			{"tpm_limit", `{"tpm_limit": -5}`},
			{"max_parallel_requests", `{"max_parallel_requests": "2"}`},
			{"budget_duration", `{"budget_duration": "fortnight"}`},
			{"budget_duration", `{"budget_duration": 30}`},
			{"duration", `{"duration": "soon"}`},
			{"metadata", `{"metadata": ["a"]}`},
			{"metadata", `{"metadata": {"model_rpm_limit": "x"}}`},
			{"key_alias", `{"key_alias": 5}`},
			{"blocked", `{"blocked": "yes"}`},
			{"model_rpm_limit", `{"model_rpm_limit": {"gpt-4o": 1.5}}`},
			{"tags", `{"tags": "prod"}`},
			{"spend", `{"spend": -1}`},
		} {
			e.fail(400, c.param, "POST", "/key/generate", c.body)
		}
		secret := str(e.ok("POST", "/key/generate", `{"spend": 1.5}`), "key")
		e.fail(400, "spend", "POST", "/key/update", `{"key": "`+secret+`", "spend": 0}`)
		e.fail(400, "key", "POST", "/key/update", `{"max_budget": 1}`)
		e.fail(404, "key", "POST", "/key/update", `{"key": "sk-unknown-0000000000000000000", "max_budget": 1}`)
		e.fail(404, "key", "POST", "/key/block", `{"key": "sk-unknown-0000000000000000000"}`)
		e.fail(404, "key", "POST", "/key/regenerate", `{"key": "sk-unknown-0000000000000000000"}`)
		e.fail(400, "key", "POST", "/key/regenerate", `{}`)
		e.fail(400, "new_key", "POST", "/key/regenerate", `{"key": "`+secret+`", "new_key": "nope"}`)
		e.fail(400, "new_master_key", "POST", "/key/regenerate", `{"key": "`+secret+`", "new_master_key": "sk-new"}`)
		e.fail(400, "key", "GET", "/key/info", "")
		e.fail(400, "model_max_budget", "POST", "/team/new", `{"model_max_budget": {"gpt-4o": 1}}`)
		e.fail(400, "model_rpm_limit", "POST", "/user/new", `{"model_rpm_limit": {"gpt-4o": 1}}`)
		e.fail(400, "max_budget_in_team", "POST", "/team/member_add", `{"team_id": "x", "member": {"user_id": "a"}, "max_budget_in_team": 3}`)
		e.fail(400, "start_date", "GET", "/spend/logs?start_date=yesterday", "")
		e.fail(400, "start_date", "GET", "/global/spend/report", "")
		e.fail(400, "group_by", "GET", "/global/spend/report?start_date=2025-01-01&end_date=2025-01-02&group_by=planet", "")
		if info := e.ok("GET", "/key/info?key="+secret, ""); obj(info, "info")["spend"] != 1.5 {
			t.Fatalf("initial spend = %v", obj(info, "info")["spend"])
		}
	})
}

func TestAudit(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		e.ok("POST", "/team/new", `{"team_id": "t1"}`)
		secret := str(e.ok("POST", "/key/generate", `{"team_id": "t1", "key_alias": "audited"}`), "key")
		e.ok("POST", "/key/update", `{"key": "`+secret+`", "max_budget": 3}`)
		e.ok("POST", "/key/block", `{"key": "`+secret+`"}`)
		secret2 := str(e.ok("POST", "/key/regenerate", `{"key": "`+secret+`"}`), "key")
		e.ok("POST", "/key/delete", `{"keys": ["`+secret2+`"]}`)
		nu := e.ok("POST", "/user/new", `{"user_id": "u1"}`)
		secret3 := str(nu, "key")

		recs := e.auditLog()
		var actions []string
		for _, r := range recs {
			actions = append(actions, r.Action)
			if r.Actor != "master_key" || r.ID == "" || r.At.IsZero() || r.ObjectType == "" || r.ObjectID == "" {
				t.Errorf("record %+v", r)
			}
			for _, s := range []string{secret, secret2, secret3} {
				if strings.Contains(string(r.Before), s) || strings.Contains(string(r.After), s) || strings.Contains(r.ObjectID, s) {
					t.Errorf("%s record holds a secret", r.Action)
				}
			}
			if r.ObjectType == "key" {
				for _, raw := range []json.RawMessage{r.Before, r.After} {
					if len(raw) == 0 {
						continue
					}
					var v map[string]any
					if err := json.Unmarshal(raw, &v); err != nil {
						t.Fatal(err)
					}
					if len(str(v, "token_prefix")) != 12 || v["token"] != nil || !strings.HasPrefix(str(v, "key_name"), "sk-...") {
						t.Errorf("%s key view %s", r.Action, raw)
					}
				}
			}
		}
		want := "team.new key.generate key.update key.block key.regenerate key.delete user.new key.generate"
		if strings.Join(actions, " ") != want {
			t.Fatalf("actions = %v\nwant      %s", actions, want)
		}
		upd := recs[2]
		if upd.ObjectID != keys.Hash(secret) || !strings.Contains(string(upd.Before), `"max_budget":null`) || !strings.Contains(string(upd.After), `"max_budget":3`) {
			t.Fatalf("update record %s -> %s", upd.Before, upd.After)
		}
		if recs[4].ObjectID != keys.Hash(secret2) || recs[5].After != nil {
			t.Fatalf("regenerate/delete records %+v %+v", recs[4], recs[5])
		}
	})
}

func TestSpend(t *testing.T) {
	for _, kind := range []string{"fake", "sqlite"} {
		t.Run(kind, func(t *testing.T) {
			// Without a Manager, /key/info shows the stored spend.
			e := newEnv(t, kind, false)
			e.ok("POST", "/team/new", `{"team_id": "t1", "team_alias": "One"}`)
			k1 := str(e.ok("POST", "/key/generate", `{"team_id": "t1", "key_alias": "a", "user_id": "u1"}`), "key")
			k2 := str(e.ok("POST", "/key/generate", `{"key_alias": "b"}`), "key")
			h1, h2 := keys.Hash(k1), keys.Hash(k2)
			d1 := time.Date(2025, 3, 10, 9, 0, 0, 0, time.UTC)
			d2 := d1.Add(24 * time.Hour)
			rec := func(id, hash, alias, team, user, model string, at time.Time, cost store.Nano) store.SpendRecord {
				return store.SpendRecord{RequestID: id, KeyHash: hash, KeyAlias: alias, TeamID: team, UserID: user, Model: model,
					ModelGroup: model, Deployment: model + "-dep", Provider: "openai", PromptTokens: 100, CompletionTokens: 20,
					CachedTokens: 10, ReasoningTokens: 5, Cost: cost, Status: 200, StartTime: at, EndTime: at.Add(time.Second), Tags: []string{"x"}}
			}
			recs := []store.SpendRecord{
				rec("r1", h1, "a", "t1", "u1", "gpt-4o", d1, 1_000_000_000),
				rec("r2", h1, "a", "t1", "u1", "gpt-4o-mini", d1.Add(time.Hour), 250_000_000),
				rec("r3", h2, "b", "", "", "gpt-4o", d1.Add(2*time.Hour), 500_000_000),
				rec("r4", h1, "a", "t1", "u1", "gpt-4o", d2, 2_000_000_000),
			}
			recs[2].Status, recs[2].ErrorCode = 429, "rate_limit_exceeded"
			if err := e.st.WriteSpend(context.Background(), recs); err != nil {
				t.Fatal(err)
			}

			rows := e.okList("GET", "/spend/logs?api_key="+k1)
			if len(rows) != 3 {
				t.Fatalf("logs by key = %v", rows)
			}
			r0 := rows[0].(map[string]any)
			if str(r0, "request_id") != "r4" || str(r0, "api_key") != h1 || r0["spend"] != 2.0 || r0["total_tokens"] != 120.0 ||
				str(r0, "startTime") != "2025-03-11T09:00:00Z" || str(r0, "model") != "gpt-4o" || str(r0, "user") != "u1" ||
				str(r0, "team_id") != "t1" || str(r0, "status") != "success" || str(r0, "model_id") != "gpt-4o-dep" {
				t.Fatalf("row = %v", r0)
			}
			md := obj(r0, "metadata")
			if str(md, "user_api_key_alias") != "a" || md["cached_tokens"] != 10.0 || md["reasoning_tokens"] != 5.0 {
				t.Fatalf("row metadata = %v", md)
			}
			if rows := e.okList("GET", "/spend/logs?api_key="+h1+"&start_date=2025-03-10&end_date=2025-03-10"); len(rows) != 2 {
				t.Fatalf("logs by hash and day = %v", rows)
			}
			if rows := e.okList("GET", "/spend/logs?team_id=t1&model=gpt-4o"); len(rows) != 2 {
				t.Fatalf("logs by team and model = %v", rows)
			}
			if rows := e.okList("GET", "/spend/logs?limit=1"); len(rows) != 1 {
				t.Fatalf("limit = %v", rows)
			}
			if rows := e.okList("GET", "/spend/logs?request_id=r3"); len(rows) != 1 || str(rows[0].(map[string]any), "status") != "failure" {
				t.Fatalf("by request id = %v", rows)
			}
			if rows := e.okList("GET", "/spend/logs?start_date=2025-03-11T00:00:00Z"); len(rows) != 1 {
				t.Fatalf("RFC 3339 start = %v", rows)
			}

			if info := e.ok("GET", "/key/info?key="+k1, ""); obj(info, "info")["spend"] != 3.25 {
				t.Fatalf("stored spend = %v", obj(info, "info")["spend"])
			}

			rep := e.okList("GET", "/global/spend/report?start_date=2025-03-10&end_date=2025-03-11")
			if len(rep) != 2 {
				t.Fatalf("report = %v", rep)
			}
			day1 := rep[0].(map[string]any)
			if str(day1, "group_by_day") != "2025-03-10" || day1["total_spend"] != 1.75 {
				t.Fatalf("day 1 = %v", day1)
			}
			teams := day1["teams"].([]any)
			if len(teams) != 2 || str(teams[0].(map[string]any), "team_name") != "Unassigned Team" || str(teams[1].(map[string]any), "team_name") != "One" || teams[1].(map[string]any)["total_spend"] != 1.25 {
				t.Fatalf("day 1 teams = %v", teams)
			}
			if md := teams[1].(map[string]any)["metadata"].([]any); len(md) != 2 || str(md[0].(map[string]any), "api_key") != h1 {
				t.Fatalf("team metadata = %v", md)
			}
			rep = e.okList("GET", "/global/spend/report?start_date=2025-03-10&end_date=2025-03-10&group_by=model")
			if len(rep) != 1 || len(rep[0].(map[string]any)["models"].([]any)) != 2 {
				t.Fatalf("by model = %v", rep)
			}
			rep = e.okList("GET", "/global/spend/report?start_date=2025-03-10&end_date=2025-03-11&group_by=key")
			if ks := rep[1].(map[string]any)["keys"].([]any); len(ks) != 1 || str(ks[0].(map[string]any), "api_key") != h1 {
				t.Fatalf("by key = %v", rep)
			}
			rep = e.okList("GET", "/global/spend/report?start_date=2025-03-10&end_date=2025-03-11&group_by=api_key")
			if len(rep) != 2 || str(rep[0].(map[string]any), "api_key") != h1 || rep[0].(map[string]any)["total_cost"] != 3.25 ||
				len(rep[0].(map[string]any)["model_details"].([]any)) != 2 {
				t.Fatalf("by api_key = %v", rep)
			}
			rep = e.okList("GET", "/global/spend/report?start_date=2025-03-10&end_date=2025-03-11&api_key="+k2)
			if len(rep) != 1 || rep[0].(map[string]any)["total_spend"] != 0.5 {
				t.Fatalf("report for one key = %v", rep)
			}
		})
	}
}

// With a Manager, /key/info shows the live account's settled spend.
func TestLiveSpend(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		secret := str(e.ok("POST", "/key/generate", `{"max_budget": 1}`), "key")
		if err := e.serve(secret, "gpt-4o", 250_000_000); err != nil {
			t.Fatal(err)
		}
		if info := e.ok("GET", "/key/info?key="+secret, ""); obj(info, "info")["spend"] != 0.25 {
			t.Fatalf("live spend = %v", obj(info, "info")["spend"])
		}
		// lowering the budget under the spend stops the key at once
		e.ok("POST", "/key/update", `{"key": "`+secret+`", "max_budget": 0.2}`)
		e.mustRefuse(400, secret, "gpt-4o")
	})
}

func TestOptField(t *testing.T) {
	r, e := decodeBody([]byte(`{"a": null, "b": "x", "c": 3}`))
	if e != nil {
		t.Fatal(e)
	}
	a, b, c, d := r.str("a"), r.str("b"), r.count("c"), r.str("d")
	if !a.Set || !a.Null || !b.given() || b.V != "x" || c.V != 3 || d.Set || r.err != nil {
		t.Fatalf("a %+v b %+v c %+v d %+v err %v", a, b, c, d, r.err)
	}
	if r.str("c"); r.err == nil || r.err.Param != "c" {
		t.Fatalf("type error = %v", r.err)
	}
}

func TestNewIDAndSecret(t *testing.T) {
	id := newID()
	if len(id) != 36 || id[14] != '4' || strings.Count(id, "-") != 4 {
		t.Fatalf("newID = %s", id)
	}
	s := newSecret()
	if len(s) != 46 || !strings.HasPrefix(s, "sk-") || s == newSecret() {
		t.Fatalf("newSecret = %s", s)
	}
	if hashOf(s) != keys.Hash(s) || hashOf(keys.Hash(s)) != keys.Hash(s) || hashOf(strings.ToUpper(keys.Hash(s))) != keys.Hash(s) {
		t.Fatal("hashOf")
	}
	if keyName("sk-AbCd...WxYz") != "sk-...WxYz" || keyName("sk-...") != "sk-..." {
		t.Fatal("keyName")
	}
}

// The documented curl call, over HTTP.
func TestOverHTTP(t *testing.T) {
	e := newEnv(t, "sqlite", true)
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: e.api.Handle}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown() })
	c := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}

	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://localhost:4000/key/generate")
	req.Header.SetMethod("POST")
	req.Header.Set("Authorization", "Bearer "+master)
	req.Header.SetContentType("application/json")
	req.SetBodyString(`{"max_budget": 50.00, "budget_duration": "monthly", "metadata": {"team": "product-engineering"}}`)
	if err := c.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	var g map[string]any
	if err := json.Unmarshal(resp.Body(), &g); err != nil || resp.StatusCode() != 200 || string(resp.Header.ContentType()) != "application/json" {
		t.Fatalf("%d %s: %s", resp.StatusCode(), resp.Header.ContentType(), resp.Body())
	}
	if !strings.HasPrefix(str(g, "key"), "sk-") || g["max_budget"] != 50.0 || str(g, "budget_duration") != "monthly" {
		t.Fatalf("generate = %s", resp.Body())
	}
	e.mustServe(str(g, "key"), "gpt-4o")

	req.Reset()
	req.SetRequestURI("http://localhost:4000/key/info?key=" + str(g, "key"))
	req.Header.SetMethod("GET")
	req.Header.Set("x-api-key", master)
	if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("info: %v %d %s", err, resp.StatusCode(), resp.Body())
	}
}
