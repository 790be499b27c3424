package main

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/admin"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/spend"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
)

// stack is the process-level state that outlives configuration snapshots:
// the store, the spend writer, the key stage and the admin API.
type stack struct {
	store  store.Store
	writer *spend.Writer
	keys   *keys.Manager
	admin  *admin.API
}

// currentEstimator prices with the router of whatever snapshot is current.
type currentEstimator struct{ h *gateway.Holder }

func (e currentEstimator) Estimate(model string, fallbacks []string, promptTokens, maxOutput int) (int64, int) {
	return e.h.Current().Router.Estimate(model, fallbacks, promptTokens, maxOutput)
}

// lateHolder lets the key stage's estimator reach the holder created after
// it (the holder needs the first snapshot, which needs the key stage).
type lateHolder struct{ h *gateway.Holder }

func (l *lateHolder) Estimate(model string, fallbacks []string, promptTokens, maxOutput int) (int64, int) {
	if l.h == nil {
		return 0, maxOutput
	}
	return currentEstimator{l.h}.Estimate(model, fallbacks, promptTokens, maxOutput)
}

func openStack(cfg *config.Config, log *zap.Logger, est keys.Estimator) (*stack, error) {
	if cfg.Storage.Disabled {
		return &stack{}, nil
	}
	st, err := sqlite.Open(cfg.Storage.Path, sqlite.Options{})
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", cfg.Storage.Path, err)
	}
	s := &stack{store: st}
	s.writer = spend.NewWriter(st, spend.Options{FlushInterval: cfg.Spend.FlushInterval, Log: log.Named("spend")})
	if cfg.General.MasterKey == "" {
		// No master key: no authentication, so no key stage and no admin
		// API (as LiteLLM); spend is still recorded.
		return s, nil
	}
	km, err := keys.New(keys.Options{Store: st, MasterKey: cfg.General.MasterKey, Estimator: est,
		Log: log.Named("keys"), AllowAnonymous: cfg.Auth.AllowAnonymous, CacheKeys: int64(cfg.Auth.KeyCacheSize)})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	// A budget period that ended: the spend written so far belongs to the
	// old period, so the queue is flushed before the total is reset.
	km.OnReset = func(kind, id string, next time.Time) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.writer.Flush(ctx); err != nil {
			log.Warn("budget reset: flush", zap.Error(err))
		}
		if err := st.ResetSpend(ctx, kind, id, next); err != nil {
			log.Error("budget reset not persisted", zap.String("kind", kind), zap.Error(err))
		}
	}
	s.keys = km
	s.admin = admin.New(admin.Options{Store: st, Keys: km, Audit: s.writer.Audit, Flush: s.writer.Flush, MasterKey: cfg.General.MasterKey, Log: log.Named("admin")})
	return s, nil
}

// close flushes every record and closes the store.
func (s *stack) close(log *zap.Logger) {
	if s.writer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := s.writer.Close(ctx); err != nil {
			log.Error("spend writer close: records may be missing", zap.Error(err))
		}
		cancel()
	}
	if s.keys != nil {
		s.keys.Close()
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			log.Error("store close", zap.Error(err))
		}
	}
}
