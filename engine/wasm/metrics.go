package wasm

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the plugin host's collectors. They are process-level: create
// them once with NewMetrics and pass them to every Build, so a config
// reload does not register them twice.
type Metrics struct {
	calls   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency *prometheus.HistogramVec
	inst    *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, as in tests and tools):
//
//	portcullis_plugin_calls_total{plugin,hook}
//	portcullis_plugin_errors_total{plugin,hook,reason}
//	portcullis_plugin_duration_seconds{plugin,hook}
//	portcullis_plugin_instances_created_total{plugin}
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_plugin_calls_total", Help: "Wasm plugin hook calls, by plugin and hook.",
		}, []string{"plugin", "hook"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_plugin_errors_total", Help: "Wasm plugin failures (trap, timeout, bad result, ...), by plugin, hook and reason.",
		}, []string{"plugin", "hook", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portcullis_plugin_duration_seconds", Help: "Time spent in one Wasm plugin hook call, envelope and result handling included.",
			Buckets: []float64{.000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}, []string{"plugin", "hook"}),
		inst: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_plugin_instances_created_total", Help: "Wasm plugin instances created (a steady rise means instances keep failing).",
		}, []string{"plugin"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.errors, m.latency, m.inst)
	}
	return m
}

// hookMetrics are one plugin's children for one hook, looked up once at
// Build so the hot path does no label lookups.
type hookMetrics struct {
	calls   prometheus.Counter
	latency prometheus.Observer
}

func (m *Metrics) hook(plugin string, h Hook) hookMetrics {
	return hookMetrics{
		calls:   m.calls.WithLabelValues(plugin, h.String()),
		latency: m.latency.WithLabelValues(plugin, h.String()),
	}
}

func (m *Metrics) failed(plugin string, h Hook, reason string) {
	m.errors.WithLabelValues(plugin, h.String(), reason).Inc()
}
