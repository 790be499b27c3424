package cache

import "github.com/prometheus/client_golang/prometheus"

// metrics are created once per Cache (process-level: they survive config
// reloads) and pre-resolved, so the hot path only adds to counters.
type metrics struct {
	hits, coalesced prometheus.Counter
	misses          prometheus.Counter
	stores          prometheus.Counter
	evicted         prometheus.Counter
	expired         prometheus.Counter
	hitsVec         *prometheus.CounterVec
	evictVec        *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		hitsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_cache_hits_total",
			Help: "Requests answered from the response cache, by source (store: a stored entry; flight: an identical request in flight).",
		}, []string{"source"}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portcullis_cache_misses_total",
			Help: "Cacheable requests that went upstream.",
		}),
		stores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portcullis_cache_stores_total",
			Help: "Upstream answers stored in the response cache.",
		}),
		evictVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_cache_evictions_total",
			Help: "Entries removed from the in-process response cache, by reason (size: for room under max_bytes; expired: TTL).",
		}, []string{"reason"}),
	}
	m.hits = m.hitsVec.WithLabelValues("store")
	m.coalesced = m.hitsVec.WithLabelValues("flight")
	m.evicted = m.evictVec.WithLabelValues("size")
	m.expired = m.evictVec.WithLabelValues("expired")
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.hitsVec, m.misses, m.stores, m.evictVec}
}
