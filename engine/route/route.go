// Package route picks the deployment that serves a request and calls it.
//
// A Router is built once per snapshot from the model list: deployments that
// share a model_name form a Group. Picking reads only immutable data and
// per-deployment atomic counters, so it takes no lock.
package route

import (
	"context"
	"math/rand/v2"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
)

// Deployment is one model_list entry, compiled.
type Deployment struct {
	ID            string
	ModelName     string
	ProviderName  string
	UpstreamModel string
	Provider      provider.Provider
	Weight        float64
	Timeout       time.Duration
	StreamTimeout time.Duration
	Mode          string // model_info.mode ("chat", "embedding", "completion")

	inflight atomic.Int64
}

// InFlight is the number of calls in progress on d.
func (d *Deployment) InFlight() int64 { return d.inflight.Load() }

// Group is the deployments sharing one public model name.
type Group struct {
	Name        string
	Deployments []*Deployment
	totalWeight float64
}

// Strategy orders candidates for one request; it returns the index of the
// deployment to try.
type Strategy interface {
	Pick(g *Group) int
}

// Router holds the groups of a snapshot.
type Router struct {
	groups   map[string]*Group
	names    []string
	wildcard []*Group // groups whose name ends in "*", longest prefix first
	strategy Strategy
}

// New builds a router. strategy names LiteLLM's routing_strategy; the ones
// not implemented yet fall back to simple-shuffle (the router issue adds
// them).
func New(deps []*Deployment, strategy string) *Router {
	r := &Router{groups: map[string]*Group{}}
	for _, d := range deps {
		g := r.groups[d.ModelName]
		if g == nil {
			g = &Group{Name: d.ModelName}
			r.groups[d.ModelName] = g
			r.names = append(r.names, d.ModelName)
		}
		w := d.Weight
		if w <= 0 {
			w = 1
		}
		g.totalWeight += w
		g.Deployments = append(g.Deployments, d)
	}
	for name, g := range r.groups {
		if strings.HasSuffix(name, "*") {
			r.wildcard = append(r.wildcard, g)
		}
	}
	sort.Slice(r.wildcard, func(i, j int) bool { return len(r.wildcard[i].Name) > len(r.wildcard[j].Name) })
	switch strategy {
	case "least-busy":
		r.strategy = leastBusy{}
	default:
		r.strategy = shuffle{}
	}
	return r
}

// Names returns the public model names in config order, wildcards excluded.
func (r *Router) Names() []string {
	out := make([]string, 0, len(r.names))
	for _, n := range r.names {
		if !strings.HasSuffix(n, "*") {
			out = append(out, n)
		}
	}
	return out
}

// Group returns the group serving model: an exact name, else the longest
// wildcard prefix ("openai/*", "*").
func (r *Router) Group(model string) (*Group, bool) {
	if g, ok := r.groups[model]; ok {
		return g, true
	}
	for _, g := range r.wildcard {
		if strings.HasPrefix(model, strings.TrimSuffix(g.Name, "*")) {
			return g, true
		}
	}
	return nil, false
}

type shuffle struct{}

// Pick chooses by weight at random (LiteLLM's simple-shuffle).
func (shuffle) Pick(g *Group) int {
	if len(g.Deployments) == 1 {
		return 0
	}
	x := rand.Float64() * g.totalWeight
	for i, d := range g.Deployments {
		w := d.Weight
		if w <= 0 {
			w = 1
		}
		if x < w {
			return i
		}
		x -= w
	}
	return len(g.Deployments) - 1
}

type leastBusy struct{}

// Pick chooses the deployment with the fewest calls in flight; ties go to
// a random one so equal deployments share load.
func (leastBusy) Pick(g *Group) int {
	best, bestN, ties := 0, int64(1<<62), 0
	for i, d := range g.Deployments {
		n := d.inflight.Load()
		switch {
		case n < bestN:
			best, bestN, ties = i, n, 1
		case n == bestN:
			ties++
			if rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

// Serve is the terminal handler: pick, call, record.
func (r *Router) Serve(x *pipeline.Exchange) error {
	g, ok := r.Group(x.Model)
	if !ok {
		e := errs.New(404, errs.CodeModelNotFound, "The model `"+x.Model+"` does not exist or you do not have access to it.")
		e.Param = "model"
		return e
	}
	d := g.Deployments[r.strategy.Pick(g)]
	x.DeploymentID, x.Provider = d.ID, d.ProviderName
	x.UpstreamModel = d.UpstreamModel
	if strings.HasSuffix(g.Name, "*") && d.UpstreamModel == "*" {
		// A wildcard deployment passes the requested model on, minus the
		// group's provider prefix ("openai/*" serving "openai/gpt-4o").
		x.UpstreamModel = strings.TrimPrefix(x.Model, strings.TrimSuffix(g.Name, "*"))
	}
	x.Attempts++
	return call(x, d)
}

func call(x *pipeline.Exchange, d *Deployment) error {
	req := &provider.Request{
		Dialect: x.Dialect,
		Body:    x.Body,
		Model:   x.UpstreamModel,
		Stream:  x.Stream,
		Header:  x.Header,
	}
	timeout := d.Timeout
	if x.Stream && d.StreamTimeout > 0 {
		timeout = d.StreamTimeout
	}
	if timeout > 0 {
		req.Deadline = x.Start.Add(timeout)
	}
	if !x.Deadline.IsZero() && (req.Deadline.IsZero() || x.Deadline.Before(req.Deadline)) {
		req.Deadline = x.Deadline
	}
	ctx := x.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	x.Hold(&d.inflight)
	var (
		resp *provider.Response
		err  error
	)
	switch x.Dialect.Operation() {
	case llm.OpEmbedding:
		e, ok := d.Provider.(provider.Embedder)
		if !ok {
			x.Unhold()
			return errs.BadRequest(errs.CodeUnsupported, "model", "model `"+x.Model+"` ("+d.ProviderName+") does not serve embeddings")
		}
		resp, err = e.Embed(ctx, req)
	case llm.OpCompletion:
		if c, ok := d.Provider.(provider.Completer); ok {
			resp, err = c.Complete(ctx, req)
		} else {
			// Served through chat; the server converts the response.
			resp, err = d.Provider.Chat(ctx, req)
		}
	default:
		resp, err = d.Provider.Chat(ctx, req)
	}
	if err != nil {
		x.Unhold()
		return err
	}
	x.Response = resp
	return nil
}
