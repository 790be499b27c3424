package policy

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's counters; a nil *metrics records nothing.
// Children are resolved once, so the hot path only adds.
type metrics struct {
	decisions [2][3]prometheus.Counter // phase × allow/deny/error
	latency   [2]prometheus.Observer
	reloads   *prometheus.CounterVec
	revision  *prometheus.GaugeVec
	revMu     sync.Mutex
	lastRev   string
}

const (
	phaseRequest = iota
	phaseResponse
)

const (
	resultAllow = iota
	resultDeny
	resultError
)

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_policy_decisions_total",
		Help: "Policy decisions by phase (request, response) and result (allow, deny, error).",
	}, []string{"phase", "result"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "portcullis_policy_eval_seconds",
		Help:    "Time to evaluate one policy decision, input building included.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3},
	}, []string{"phase"})
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_policy_reloads_total",
			Help: "Policy reloads by result (ok, error); an error keeps the running revision.",
		}, []string{"result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portcullis_policy_revision_info",
			Help: "The running policy revision (value 1).",
		}, []string{"revision"}),
	}
	for p, phase := range []string{"request", "response"} {
		for r, res := range []string{"allow", "deny", "error"} {
			m.decisions[p][r] = dec.WithLabelValues(phase, res)
		}
		m.latency[p] = lat.WithLabelValues(phase)
	}
	for _, c := range []prometheus.Collector{dec, lat, m.reloads, m.revision} {
		// A second engine on one registry (tests) counts unexported.
		_ = reg.Register(c)
	}
	return m
}

func (m *metrics) decision(phase, result int, took time.Duration) {
	if m == nil {
		return
	}
	m.decisions[phase][result].Inc()
	m.latency[phase].Observe(took.Seconds())
}

func (m *metrics) reload(result string) {
	if m == nil {
		return
	}
	m.reloads.WithLabelValues(result).Inc()
}

func (m *metrics) setRevision(id string) {
	if m == nil {
		return
	}
	m.revMu.Lock()
	defer m.revMu.Unlock()
	if m.lastRev != "" {
		m.revision.DeleteLabelValues(m.lastRev)
	}
	m.revision.WithLabelValues(id).Set(1)
	m.lastRev = id
}
