// Package telemetry builds the gateway's zap loggers and Prometheus metrics.
//
// Loggers are created once and injected; nothing logs through a global.
// Metric children for each model are resolved when a snapshot is built, so
// the request path touches only atomic counters, never a label lookup.
package telemetry

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns a JSON (production) or console (development) logger
// writing to stderr through a 256 KiB buffer flushed every 100 ms, so a
// request's log line is not a write system call of its own. Sync flushes
// it (main does at exit); a crash loses at most the last 100 ms of lines.
func NewLogger(format, level string) (*zap.Logger, error) {
	var cfg zap.Config
	if format == "console" {
		cfg = zap.NewDevelopmentConfig()
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	} else {
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "ts"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		cfg.Sampling = nil // one line per request, never sampled away
	}
	cfg.DisableStacktrace = true
	if level != "" {
		l, err := zapcore.ParseLevel(level)
		if err != nil {
			return nil, fmt.Errorf("log level: %w", err)
		}
		cfg.Level = zap.NewAtomicLevelAt(l)
	}
	// Buffered, flushed every 100ms. Sync only flushes: zap's own syncer
	// for a file calls fsync, which on a log redirected to a file costs a
	// disk flush every interval, with the buffer's lock held meanwhile
	// (every request's log line waits behind it).
	ws := &zapcore.BufferedWriteSyncer{WS: noSync{os.Stderr}, Size: 256 << 10, FlushInterval: 100 * time.Millisecond}
	var enc zapcore.Encoder
	if cfg.Encoding == "console" {
		enc = zapcore.NewConsoleEncoder(cfg.EncoderConfig)
	} else {
		enc = zapcore.NewJSONEncoder(cfg.EncoderConfig)
	}
	return zap.New(zapcore.NewCore(enc, ws, cfg.Level), zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(os.Stderr)))), nil
}

// noSync writes to a file and never fsyncs it: a log line is in the
// kernel once written, which a crash of the process does not lose.
type noSync struct{ f *os.File }

func (w noSync) Write(p []byte) (int, error) { return w.f.Write(p) }
func (noSync) Sync() error                   { return nil }

// Metrics is the gateway's metric set, registered in its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	ttfb      *prometheus.HistogramVec
	tokens    *prometheus.CounterVec
	streamErr *prometheus.CounterVec
	inflight  prometheus.Gauge
	attempts  *prometheus.CounterVec
	cooldowns *prometheus.CounterVec
	fallbacks *prometheus.CounterVec

	mu     sync.Mutex
	models map[string]*Model
}

// NewMetrics registers the metric families.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), models: map[string]*Model{}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_requests_total", Help: "Requests served, by public model name, endpoint and HTTP status.",
	}, []string{"model", "endpoint", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "portcullis_request_duration_seconds", Help: "Time from request to the last byte of the response, by model.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{"model"})
	m.ttfb = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "portcullis_time_to_first_byte_seconds", Help: "Time from request to the first response byte of a stream, by model.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"model"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_tokens_total", Help: "Tokens counted, by model and type (prompt, completion).",
	}, []string{"model", "type"})
	m.streamErr = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_stream_errors_total", Help: "Streams ended by an error after the first byte reached the client, by model and code.",
	}, []string{"model", "code"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portcullis_requests_in_flight", Help: "Requests being served.",
	})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_deployment_attempts_total", Help: "Upstream attempts per deployment, by outcome (success, failure).",
	}, []string{"deployment", "model", "outcome"})
	m.cooldowns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_deployment_cooldowns_total", Help: "Times a deployment was taken out of the rotation after failures.",
	}, []string{"deployment", "model"})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_fallbacks_total", Help: "Requests moved to a fallback model group, by the requested model.",
	}, []string{"model"})
	m.Registry.MustRegister(m.requests, m.latency, m.ttfb, m.tokens, m.streamErr, m.inflight, m.attempts, m.cooldowns, m.fallbacks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Model holds the pre-resolved children of one model's metrics.
type Model struct {
	m          *Metrics
	name       string
	ok         [4]prometheus.Counter // chat, completion, embedding, messages with status 200
	Latency    prometheus.Observer
	TTFB       prometheus.Observer
	Prompt     prometheus.Counter
	Completion prometheus.Counter
}

// Name is the model name the handle counts for.
func (h *Model) Name() string { return h.name }

// Endpoints indexes Model.ok.
var Endpoints = [4]string{"chat", "completion", "embedding", "messages"}

// Model returns the handle for a model name, creating it once.
func (m *Metrics) Model(name string) *Model {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, ok := m.models[name]; ok {
		return h
	}
	h := &Model{
		m: m, name: name,
		Latency:    m.latency.WithLabelValues(name),
		TTFB:       m.ttfb.WithLabelValues(name),
		Prompt:     m.tokens.WithLabelValues(name, "prompt"),
		Completion: m.tokens.WithLabelValues(name, "completion"),
	}
	for i, ep := range Endpoints {
		h.ok[i] = m.requests.WithLabelValues(name, ep, "200")
	}
	m.models[name] = h
	return h
}

// Request counts one finished request.
func (h *Model) Request(endpoint int, status int) {
	if status == 200 && endpoint >= 0 && endpoint < len(h.ok) {
		h.ok[endpoint].Inc()
		return
	}
	ep := "other"
	if endpoint >= 0 && endpoint < len(Endpoints) {
		ep = Endpoints[endpoint]
	}
	h.m.requests.WithLabelValues(h.name, ep, strconv.Itoa(status)).Inc()
}

// StreamError counts a stream ended by an error after it was committed.
func (h *Model) StreamError(code string) { h.m.streamErr.WithLabelValues(h.name, code).Inc() }

// InFlight is the in-flight gauge.
func (m *Metrics) InFlight() prometheus.Gauge { return m.inflight }

// Deployment holds a deployment's pre-resolved router metrics.
type Deployment struct {
	ok, failed, cooldown prometheus.Counter
}

// Deployment returns the handle for a deployment.
func (m *Metrics) Deployment(id, model string) *Deployment {
	return &Deployment{
		ok:       m.attempts.WithLabelValues(id, model, "success"),
		failed:   m.attempts.WithLabelValues(id, model, "failure"),
		cooldown: m.cooldowns.WithLabelValues(id, model),
	}
}

// Attempt counts one upstream attempt.
func (d *Deployment) Attempt(ok bool) {
	if ok {
		d.ok.Inc()
	} else {
		d.failed.Inc()
	}
}

// Cooldown counts a cooldown.
func (d *Deployment) Cooldown() { d.cooldown.Inc() }

// Group holds a model group's pre-resolved metrics.
type Group struct{ fallbacks prometheus.Counter }

// Group returns the handle for a model group.
func (m *Metrics) Group(name string) *Group {
	return &Group{fallbacks: m.fallbacks.WithLabelValues(name)}
}

// Fallback counts a move to a fallback group.
func (g *Group) Fallback() { g.fallbacks.Inc() }
