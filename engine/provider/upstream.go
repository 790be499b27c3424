package provider

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// DefaultTimeout bounds a call whose deployment sets no timeout (LiteLLM's
// default request timeout is 6000 s; we choose 10 minutes).
const DefaultTimeout = 10 * time.Minute

// maxErrorBody bounds how much of an upstream error body is read.
const maxErrorBody = 64 << 10

// DialTimeout bounds connecting to an upstream: the TCP connection and,
// for https, the TLS handshake (the call's own deadline when sooner).
// LiteLLM's HTTP clients connect within 5 s too; a slow or unreachable
// host then fails over instead of holding the request.
const DialTimeout = 5 * time.Second

// Client is the upstream HTTP client a snapshot shares between its
// deployments: one pool of HTTP/1.1 connections per upstream host
// (client.go), which an endpoint finds once (its template).
type Client struct {
	// TLSConfig is the base of every https host's configuration
	// (newTLSConfig); nil: the defaults.
	TLSConfig *tls.Config

	dialer *fasthttp.TCPDialer
	// pools: "http://host:port" or "https://host:port" -> *hostPool.
	pools sync.Map
	// tls: "host:port" of the https upstreams (Prepare) -> *tls.Config.
	tls      sync.Map
	sessions tls.ClientSessionCache
	// onDial, in tests, sees each connection dialled.
	onDial func(net.Conn)
}

// NewClient returns a snapshot's upstream client.
func NewClient() *Client {
	return &Client{
		sessions: tls.NewLRUClientSessionCache(0),
		dialer:   &fasthttp.TCPDialer{Concurrency: 0, DNSCacheDuration: time.Minute},
	}
}

// CloseIdleConnections closes every host's idle connections.
func (c *Client) CloseIdleConnections() {
	c.pools.Range(func(_, v any) bool {
		v.(*hostPool).closeIdle()
		return true
	})
}

// Prepare tells the client that base (a deployment's API base URL) is
// served over https, and registers its TLS configuration (newTLSConfig)
// before the first call; without it the host's pool makes the same on
// first use (client.go, tlsFor).
func (c *Client) Prepare(base string) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	c.tls.LoadOrStore(addr, c.newTLSConfig(u.Hostname()))
}

type dialed struct {
	conn net.Conn
	err  error
}

// dialWith connects to addr in a goroutine of its own and waits for it. The
// resolver, connect and TLS handshake run tens of frames deeper than the
// request that needs the connection; run inline they would grow every
// request goroutine's stack to 16 KiB or more, and a goroutine that then
// holds an idle stream keeps that stack (bench/ scenario (e)). A new
// connection costs a goroutine; a pooled one costs nothing.
//
// With cfg (an https host), the TLS handshake is done there too.
func (c *Client) dialWith(addr string, timeout time.Duration, cfg *tls.Config) (net.Conn, error) {
	if timeout <= 0 || timeout > DialTimeout {
		timeout = DialTimeout
	}
	ch := make(chan dialed, 1)
	go func() {
		deadline := time.Now().Add(timeout)
		conn, err := c.dialer.DialTimeout(addr, timeout)
		if err == nil && cfg != nil {
			conn, err = handshake(conn, cfg, deadline)
		}
		ch <- dialed{conn, err}
	}()
	r := <-ch
	if c.onDial != nil && r.err == nil {
		c.onDial(r.conn)
	}
	return r.conn, r.err
}

func handshake(raw net.Conn, cfg *tls.Config, deadline time.Time) (net.Conn, error) {
	conn := tls.Client(raw, cfg)
	_ = conn.SetDeadline(deadline)
	if err := conn.Handshake(); err != nil {
		_ = raw.Close()
		if timeout(err) {
			return nil, fasthttp.ErrTLSHandshakeTimeout
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// Endpoint is one upstream URL with the headers every call to it carries,
// precomputed when the deployment is built.
type Endpoint struct {
	Provider string
	Client   *Client
	URL      string
	Headers  [][2]string
	// Secret is scrubbed from any upstream error text.
	Secret string
	// Classify refines the generic upstream error mapping; may be nil.
	Classify func(e *errs.Error, status int, body []byte)

	// tmpl is the request every call starts from (URL parsed, fixed
	// headers set), built on first use.
	tmpl atomic.Pointer[endpointTemplate]
}

// endpointTemplate holds what every call to an endpoint starts from: its
// request heads, serialised once (client.go), and its host's pool.
type endpointTemplate struct {
	json, sse *requestHead
	pool      *hostPool
	err       error // the URL cannot be called
}

func (ep *Endpoint) template() *endpointTemplate {
	if t := ep.tmpl.Load(); t != nil {
		return t
	}
	t := &endpointTemplate{}
	var u fasthttp.URI
	err := u.Parse(nil, []byte(ep.URL))
	isTLS := string(u.Scheme()) == "https"
	switch s := string(u.Scheme()); {
	case err != nil:
		t.err = err
	case s != "http" && !isTLS:
		t.err = fmt.Errorf("unsupported protocol %q: http and https are supported", s)
	}
	if t.err == nil {
		if t.json, err = newRequestHead(&u, ep.Headers, "application/json"); err != nil {
			t.err = err
		}
		t.sse, _ = newRequestHead(&u, ep.Headers, "text/event-stream")
	}
	addr := fasthttp.AddMissingPort(string(u.Host()), isTLS)
	host, _, _ := net.SplitHostPort(addr)
	t.pool = ep.Client.pool(addr, host, isTLS)
	ep.tmpl.CompareAndSwap(nil, t)
	return ep.tmpl.Load()
}

// Do sends body and returns the response in dialect d. extra headers are
// added after the endpoint's own (Accept excepted: the dialect decides).
func (ep *Endpoint) Do(ctx context.Context, r *Request, body []byte, d llm.Dialect, extra ...[2]string) (*Response, error) {
	telemetry.Mark(telemetry.MarkUpstreamCall)
	t := ep.template()
	if t.err != nil {
		return nil, ep.transportError(t.err)
	}
	deadline := r.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(DefaultTimeout)
	}
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	headerDeadline := deadline
	if r.Stream && !r.HeaderDeadline.IsZero() && r.HeaderDeadline.Before(deadline) {
		headerDeadline = r.HeaderDeadline
	}
	return ep.call(t, r, body, d, extra, headerDeadline, deadline)
}

func (ep *Endpoint) transportError(err error) *errs.Error {
	if errors.Is(err, fasthttp.ErrNoFreeConns) || errors.Is(err, syscall.EADDRNOTAVAIL) ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		// Our own limits (connection cap, local ports, file descriptors),
		// not the upstream's fault: no cooldown, no fallback storm.
		return errs.New(503, errs.CodeUnavailable, ep.Provider+": the gateway is out of connections ("+localCause(err)+"); try again").Wrap(err)
	}
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) ||
		timeout(err) {
		e := errs.New(408, errs.CodeUpstreamTimeout, ep.Provider+": upstream request timed out")
		e.Retryable, e.Fallback, e.Provider = true, true, ep.Provider
		return e.Wrap(err)
	}
	e := errs.New(502, errs.CodeUpstreamUnreachable, ep.Provider+": cannot reach upstream: "+scrub(err.Error(), ep.Secret))
	e.Retryable, e.Fallback, e.Provider = true, true, ep.Provider
	return e
}

func localCause(err error) string {
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "per-host cap"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free local port"
	default:
		return "no free file descriptor"
	}
}

// UpstreamError maps an upstream error response to a gateway error. The
// status is kept (so SDKs raise the same typed error the provider would
// have caused), the provider's message is kept with any secret scrubbed,
// and the code says what kind of failure it was.
func (ep *Endpoint) UpstreamError(status int, body, retryAfter []byte) *errs.Error {
	e := ClassifyUpstream(ep.Provider, status, body, retryAfter, ep.Secret)
	if ep.Classify != nil {
		ep.Classify(e, status, body)
	}
	return e
}

// ClassifyUpstream is the provider-independent part of UpstreamError.
func ClassifyUpstream(provider string, status int, body, retryAfter []byte, secret string) *errs.Error {
	msg, code, typ := upstreamMessage(body)
	msg = scrub(msg, secret)
	if msg == "" {
		msg = "upstream returned HTTP " + strconv.Itoa(status)
	}
	e := errs.New(status, errs.CodeUpstream, provider+": "+msg)
	e.Provider = provider
	lc := strings.ToLower(code + " " + typ + " " + msg)
	switch {
	case status == 429 && (strings.Contains(lc, "insufficient_quota") || strings.Contains(lc, "quota")),
		status == 402,
		status == 400 && (strings.Contains(lc, "credit balance") || strings.Contains(lc, "insufficient_quota")):
		e.Code = errs.CodeQuotaExceeded
		e.Fallback = true
	case status == 429:
		e.Code = errs.CodeRateLimited
		e.Retryable, e.Fallback = true, true
	case status == 408 || status >= 500:
		e.Retryable, e.Fallback = true, true
	case status == 400 && (strings.Contains(lc, "context_length_exceeded") || strings.Contains(lc, "context length") ||
		strings.Contains(lc, "prompt is too long") || strings.Contains(lc, "maximum context")):
		e.Code = errs.CodeContextWindow
	case status == 400 && (strings.Contains(lc, "content_filter") || strings.Contains(lc, "content_policy") ||
		strings.Contains(lc, "content management policy")):
		e.Code = errs.CodeContentFilter
	case status == 401 || status == 403:
		e.Fallback = true
	case status == 404:
		e.Code = errs.CodeModelNotFound
		e.Fallback = true
	}
	if len(retryAfter) > 0 {
		if f, err := strconv.ParseFloat(string(retryAfter), 64); err == nil && f >= 0 {
			e.RetryAfter = f
		}
	}
	return e
}

// upstreamMessage extracts the message, code and type from the error body
// shapes providers use: OpenAI {"error":{"message","type","code"}},
// Anthropic {"type":"error","error":{"type","message"}}, and the flat
// {"message"} / {"detail"} / {"error":"..."} of some compatible servers.
func upstreamMessage(body []byte) (msg, code, typ string) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return "", "", ""
	}
	if !gjson.ValidBytes(body) {
		if len(body) > 512 {
			body = body[:512]
		}
		return strings.ToValidUTF8(string(body), ""), "", ""
	}
	r := gjson.ParseBytes(body)
	if e := r.Get("error"); e.IsObject() {
		return e.Get("message").String(), e.Get("code").String(), e.Get("type").String()
	} else if e.Type == gjson.String {
		return e.String(), "", ""
	}
	for _, k := range []string{"message", "detail", "msg"} {
		if v := r.Get(k); v.Exists() {
			return v.String(), r.Get("code").String(), r.Get("type").String()
		}
	}
	return "", "", ""
}

// scrub removes a secret, and anything that looks like one of our bearer
// values, from text that may reach a client or a log.
func scrub(s, secret string) string {
	if secret != "" && len(secret) >= 4 && strings.Contains(s, secret) {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

// Protected reports whether a header name may not be set or removed by a
// policy or plugin: credentials, and headers that frame the request.
func Protected(name string) bool {
	switch strings.ToLower(name) {
	case "authorization", "x-api-key", "api-key", "proxy-authorization", "cookie", "host", "content-length",
		"content-type", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "accept",
		"accept-encoding", "x-goog-api-key":
		return true
	}
	return false
}
