// Package admin serves the management API of the gateway: virtual keys,
// teams, users and spend, with LiteLLM's paths and request and response
// bodies (/key/generate, /team/new, /user/new, /spend/logs, ...). See
// README.md for every endpoint and where it differs from LiteLLM.
//
// Every call must carry the master key. Every change goes to the store
// first, then to the keys.Manager (so it takes effect at once on this
// replica), then to the audit log. Money is USD floats at this edge and
// nano-dollars inside. The admin API is not the hot path: requests are
// decoded with encoding/json.
package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/store"
)

// Options configure the admin API.
type Options struct {
	Store store.Store
	// Keys is the virtual-key stage, told about every change; may be nil
	// (changes then take effect when its cache entries expire).
	Keys *keys.Manager
	// Audit receives one record per change (the batched writer's Audit
	// method); nil: no audit records.
	Audit func(store.AuditRecord)
	// Flush commits the spend records queued so far (the batched writer's
	// Flush); used before a key's hash changes. May be nil.
	Flush func(ctx context.Context) error
	// MasterKey is required: every admin call must carry it (Authorization:
	// Bearer, x-api-key or api-key). Without one every call is refused.
	MasterKey string
	Log       *zap.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// API is the admin API handler.
type API struct {
	st     store.Store
	km     *keys.Manager
	audit  func(store.AuditRecord)
	flush  func(context.Context) error
	master []byte
	log    *zap.Logger
	clock  func() time.Time
	routes map[string]route
}

// actor names who made a change in audit records and created_by.
const actor = "master_key"

// callTimeout bounds one admin call's store work.
const callTimeout = 30 * time.Second

type handler func(ctx context.Context, rq *request) (any, *errs.Error)

type route struct {
	method string
	h      handler
}

// New builds the API.
func New(o Options) *API {
	a := &API{st: o.Store, km: o.Keys, audit: o.Audit, flush: o.Flush, log: o.Log, clock: o.Now}
	if o.MasterKey != "" {
		a.master = []byte(o.MasterKey)
	}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	if a.clock == nil {
		a.clock = time.Now
	}
	get, post := fasthttp.MethodGet, fasthttp.MethodPost
	a.routes = map[string]route{
		"/key/generate":   {post, a.keyGenerate},
		"/key/update":     {post, a.keyUpdate},
		"/key/delete":     {post, a.keyDelete},
		"/key/regenerate": {post, a.keyRegenerate},
		"/key/block":      {post, a.keyBlock},
		"/key/unblock":    {post, a.keyUnblock},
		"/key/info":       {get, a.keyInfo},
		"/key/list":       {get, a.keyList},

		"/team/new":        {post, a.teamNew},
		"/team/update":     {post, a.teamUpdate},
		"/team/delete":     {post, a.teamDelete},
		"/team/member_add": {post, a.teamMemberAdd},
		"/team/block":      {post, a.teamBlock},
		"/team/unblock":    {post, a.teamUnblock},
		"/team/info":       {get, a.teamInfo},
		"/team/list":       {get, a.teamList},

		"/user/new":    {post, a.userNew},
		"/user/update": {post, a.userUpdate},
		"/user/info":   {get, a.userInfo},
		"/user/list":   {get, a.userList},

		"/spend/logs":          {get, a.spendLogs},
		"/global/spend/report": {get, a.spendReport},
	}
	return a
}

// Handle serves every admin path. Unknown paths get a 404, a wrong method a
// 405, both in the OpenAI error shape.
func (a *API) Handle(ctx *fasthttp.RequestCtx) {
	if e := a.authorize(&ctx.Request.Header); e != nil {
		writeError(ctx, e)
		return
	}
	path := string(ctx.Path())
	rt, ok := a.routes[path]
	var pathKey string
	if !ok && strings.HasPrefix(path, "/key/") && strings.HasSuffix(path, "/regenerate") {
		// LiteLLM's /key/{key}/regenerate.
		pathKey = strings.TrimSuffix(strings.TrimPrefix(path, "/key/"), "/regenerate")
		if pathKey != "" {
			rt, ok = route{fasthttp.MethodPost, a.keyRegenerate}, true
		}
	}
	if !ok {
		writeError(ctx, errs.New(404, errs.CodeNotFound, "Unknown admin route "+string(ctx.Method())+" "+path))
		return
	}
	if string(ctx.Method()) != rt.method {
		ctx.Response.Header.Set("Allow", rt.method)
		writeError(ctx, errs.New(405, errs.CodeMethodNotAllowed, "Method "+string(ctx.Method())+" not allowed on "+path+"; use "+rt.method))
		return
	}
	rq := &request{query: ctx.QueryArgs(), pathKey: pathKey}
	if rt.method == fasthttp.MethodPost {
		var e *errs.Error
		if rq.body, e = decodeBody(ctx.PostBody()); e != nil {
			writeError(ctx, e)
			return
		}
	}
	// Detached from the connection and from server shutdown, so a change of
	// several steps (store, Manager, audit) is not cut in the middle.
	cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	out, e := rt.h(cctx, rq)
	if e != nil {
		if e.Status >= 500 {
			a.log.Error("admin call failed", zap.String("path", path), zap.Error(e))
		}
		writeError(ctx, e)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		e := errs.Internal("encoding the response failed", err)
		a.log.Error("admin call failed", zap.String("path", path), zap.Error(e))
		writeError(ctx, e)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// authorize requires the master key, compared in constant time.
func (a *API) authorize(h *fasthttp.RequestHeader) *errs.Error {
	if a.master == nil {
		return errs.New(401, errs.CodeUnauthorized, "Authentication Error: the admin API needs a master key (general_settings.master_key); none is configured.")
	}
	cred := keys.Credential(h)
	if len(cred) == 0 {
		return errs.New(401, errs.CodeUnauthorized, "Authentication Error: no API key provided. Send the master key as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
	}
	if subtle.ConstantTimeCompare(cred, a.master) != 1 {
		return errs.New(401, errs.CodeUnauthorized, "Authentication Error: the admin API needs the master key.")
	}
	return nil
}

func writeError(ctx *fasthttp.RequestCtx, e *errs.Error) {
	for _, h := range e.Headers {
		ctx.Response.Header.Set(h[0], h[1])
	}
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	ctx.SetBody(e.AppendOpenAI(nil))
}

// now is the clock in UTC at the store's precision (milliseconds), so what
// an endpoint returns is what a later read returns.
func (a *API) now() time.Time { return a.clock().UTC().Truncate(time.Millisecond) }

// record sends one audit record; before and after are views without
// secrets (a key appears by its hash prefix and key_name only).
func (a *API) record(action, objectType, objectID string, before, after any) {
	if a.audit == nil {
		return
	}
	r := store.AuditRecord{ID: newID(), At: a.now(), Actor: actor, Action: action, ObjectType: objectType, ObjectID: objectID}
	if before != nil {
		r.Before, _ = json.Marshal(before)
	}
	if after != nil {
		r.After, _ = json.Marshal(after)
	}
	a.audit(r)
}

// storeError maps a store failure to the client's error.
func storeError(err error, what, id string) *errs.Error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errs.New(404, errs.CodeNotFound, what+" not found: "+id)
	case errors.Is(err, store.ErrConflict):
		return errs.New(400, codeExists, what+" already exists: "+id)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.New(503, errs.CodeUnavailable, "the request was cancelled").Wrap(err)
	}
	return errs.New(500, errs.CodeInternal, "store error").Wrap(err)
}

// Codes of this package (besides errs'):
const (
	codeExists          errs.Code = "already_exists"
	codeTeamModelAccess errs.Code = "team_model_access_denied"
)

// newID is a random UUID (version 4), for team and user ids and audit
// records.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
