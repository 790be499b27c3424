package main

import (
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/cache"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// stages are the process-level pipeline stages that outlive snapshots:
// the response cache (its entries survive a reload).
type stages struct {
	cache *cache.Cache
}

func openStages(cfg *config.Config, log *zap.Logger, m *telemetry.Metrics) (*stages, error) {
	s := &stages{}
	// The cache is made even when disabled, so a reload can turn it on.
	c, err := cache.New(cfg.Cache, cache.Options{Log: log})
	if err != nil {
		return nil, err
	}
	for _, col := range c.Collectors() {
		m.Registry.MustRegister(col)
	}
	s.cache = c
	return s, nil
}

// apply puts the stages into a snapshot's options.
func (s *stages) apply(o *gateway.Options) {
	if s.cache != nil {
		o.Cache = s.cache.Middleware()
	}
}

// reload applies the settings of a changed config file to the stages
// (before the snapshot is rebuilt); a file that does not load is reported
// by the snapshot's own reload.
func (s *stages) reload(path string, log *zap.Logger) {
	cfg, err := config.LoadFile(path)
	if err != nil {
		return
	}
	if s.cache != nil {
		if err := s.cache.Reconfigure(cfg.Cache); err != nil {
			log.Error("cache settings not applied", zap.Error(err))
		}
	}
}

func (s *stages) close() {
	if s.cache != nil {
		s.cache.Close()
	}
}
