package cache

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/errs"
)

// ErrFlushUnsupported is returned by Flush for a store the Cache did not
// build (a shared backend is flushed by its own tools, not by one replica).
var ErrFlushUnsupported = errors.New("cache: flushall is only supported for the in-memory cache")

// pingKey is the entry Ping writes and reads back.
const pingKey = "portcullis:cache:ping"

// Ping writes an entry and reads it back.
func (c *Cache) Ping(ctx context.Context) error {
	st := c.store()
	if st == nil {
		return ErrNoStore
	}
	if err := st.Set(ctx, pingKey, []byte("1"), time.Second); err != nil {
		return err
	}
	if _, ok, err := st.Get(ctx, pingKey); err != nil || !ok {
		if err == nil {
			err = errors.New("cache: the ping entry was not read back")
		}
		return err
	}
	return st.Delete(ctx, pingKey)
}

// ErrNoStore is Ping's error while the cache has never been enabled (no
// store is built until then).
var ErrNoStore = errors.New("cache: the response cache has not been enabled, so it has no store")

// Delete removes entries by the keys responses carry in
// x-litellm-cache-key.
func (c *Cache) Delete(ctx context.Context, keys []string) error {
	st := c.store()
	if st == nil {
		return nil // never enabled: nothing stored
	}
	for _, k := range keys {
		if err := st.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// Flush drops every entry of the in-memory store.
func (c *Cache) Flush() error {
	b := c.box.Load()
	if b == nil {
		return nil // never enabled: nothing stored
	}
	if b.own == nil {
		return ErrFlushUnsupported
	}
	b.own.c.Clear()
	return nil
}

// AdminHandlers are LiteLLM's cache endpoints, for the server's operator
// endpoints (master key only): GET /cache/ping, POST /cache/delete with
// {"keys": [...]} (or a bare array of keys), POST /cache/flushall.
func (c *Cache) AdminHandlers() map[string]fasthttp.RequestHandler {
	return map[string]fasthttp.RequestHandler{
		"/cache/ping": func(ctx *fasthttp.RequestCtx) {
			cfg := c.cfg.Load()
			if !cfg.enabled {
				adminError(ctx, 503, "cache_disabled", "the response cache is not enabled (litellm_settings.cache)")
				return
			}
			if err := c.Ping(context.Background()); err != nil {
				adminError(ctx, 503, "cache_unhealthy", "cache ping failed: "+err.Error())
				return
			}
			typ := "local"
			if c.own() == nil {
				typ = "external"
			}
			adminJSON(ctx, map[string]any{"status": "healthy", "cache_type": typ, "ping_response": true,
				"set_cache_response": "success", "litellm_cache_params": map[string]any{
					"type": typ, "ttl": cfg.ttl.Seconds(), "max_bytes": cfg.maxBytes, "namespace": cfg.namespace, "scope": scopeNames[cfg.scope],
				}})
		},
		"/cache/delete": func(ctx *fasthttp.RequestCtx) {
			if !post(ctx) {
				return
			}
			var keys []string
			var req struct {
				Keys []string `json:"keys"`
			}
			body := ctx.PostBody()
			if err := json.Unmarshal(body, &req); err == nil {
				keys = req.Keys
			} else if err := json.Unmarshal(body, &keys); err != nil {
				adminError(ctx, 400, "invalid_request", `the body must be {"keys": ["..."]}`)
				return
			}
			if len(keys) == 0 {
				adminError(ctx, 400, "invalid_request", `no keys given: send {"keys": ["..."]} with the x-litellm-cache-key values`)
				return
			}
			if err := c.Delete(context.Background(), keys); err != nil {
				adminError(ctx, 503, "cache_unhealthy", "cache delete failed: "+err.Error())
				return
			}
			c.log.Info("cache entries deleted", zap.Int("keys", len(keys)))
			adminJSON(ctx, map[string]any{"status": "success", "deleted": len(keys)})
		},
		"/cache/flushall": func(ctx *fasthttp.RequestCtx) {
			if !post(ctx) {
				return
			}
			if err := c.Flush(); err != nil {
				adminError(ctx, 501, "not_supported", err.Error())
				return
			}
			c.log.Info("cache flushed")
			adminJSON(ctx, map[string]any{"status": "success"})
		},
	}
}

var scopeNames = [...]string{scopeTeam: "team", scopeKey: "key", scopeGlobal: "global"}

func post(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsPost() {
		return true
	}
	ctx.Response.Header.Set("Allow", "POST")
	adminError(ctx, 405, "method_not_allowed", "use POST")
	return false
}

func adminJSON(ctx *fasthttp.RequestCtx, v any) {
	b, _ := json.Marshal(v)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func adminError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(errs.New(status, errs.Code(code), msg).AppendOpenAI(nil))
}
