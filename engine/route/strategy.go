package route

import (
	"math"
	"math/rand/v2"
)

// filter is what a deployment must satisfy to be picked for a request.
type filter struct {
	now  int64
	tags []string
	// onlyDefault: no deployment matched the request tags; take those
	// tagged "default".
	onlyDefault bool
	// skip excludes one deployment (the one that just failed, when the
	// group has others).
	skip *Deployment
	// only restricts the pick to one deployment id (a pinned route).
	only string
}

func (r *Router) eligible(d *Deployment, f *filter) bool {
	if d == f.skip || d.health.coolingDown(f.now) {
		return false
	}
	if f.only != "" && d.ID != f.only {
		return false
	}
	if d.MaxParallel > 0 && d.health.inflight.Load() >= int64(d.MaxParallel) {
		return false
	}
	if f.onlyDefault {
		if !d.hasTag("default") {
			return false
		}
	} else if len(f.tags) > 0 {
		match := false
		for _, t := range f.tags {
			if d.hasTag(t) {
				match = true
				break
			}
		}
		if !match {
			return false
		}
	}
	if r.strategy == stUsage && (d.RPM > 0 || d.TPM > 0) {
		reqs, toks := d.health.usage(f.now)
		if d.RPM > 0 && reqs >= int64(d.RPM) || d.TPM > 0 && toks >= int64(d.TPM) {
			return false
		}
	}
	return true
}

// pick chooses a deployment of g by the router's strategy among the
// eligible ones; nil when none is.
func (r *Router) pick(g *Group, f *filter, stream bool) *Deployment {
	d := r.pickOnce(g, f, stream)
	if d == nil && len(f.tags) > 0 && g.hasDefault && !f.onlyDefault {
		f.onlyDefault = true
		d = r.pickOnce(g, f, stream)
		f.onlyDefault = false
	}
	return d
}

func (r *Router) pickOnce(g *Group, f *filter, stream bool) *Deployment {
	switch r.strategy {
	case stLeastBusy:
		return r.leastBusy(g, f)
	case stLatency:
		return r.lowestLatency(g, f, stream)
	case stUsage:
		return r.mostHeadroom(g, f)
	case stCost:
		return r.cheapest(g, f)
	}
	return r.shuffle(g, f)
}

// shuffleWeight is simple-shuffle's weight: weight if the group sets any,
// else rpm, else tpm, else equal.
func shuffleWeight(g *Group, d *Deployment) float64 {
	var w float64
	switch g.weighBy() {
	case 1:
		w = d.Weight
	case 2:
		w = float64(d.RPM)
	case 3:
		w = float64(d.TPM)
	default:
		return 1
	}
	if w <= 0 {
		return 0
	}
	return w
}

// weighBy reports what the group's shuffle weighs by (1 weight, 2 rpm,
// 3 tpm, 0 nothing).
func (g *Group) weighBy() int {
	if g.weighKind == 0 {
		return 0
	}
	return int(g.weighKind) - 1
}

// shuffle is LiteLLM's simple-shuffle: weighted random.
func (r *Router) shuffle(g *Group, f *filter) *Deployment {
	total := 0.0
	var only *Deployment
	n := 0
	for _, d := range g.Deployments {
		if r.eligible(d, f) {
			total += shuffleWeight(g, d)
			only = d
			n++
		}
	}
	if n <= 1 {
		return only
	}
	if total <= 0 {
		// Every eligible deployment has weight 0: pick uniformly.
		k := rand.IntN(n)
		for _, d := range g.Deployments {
			if r.eligible(d, f) {
				if k == 0 {
					return d
				}
				k--
			}
		}
		return only
	}
	x := rand.Float64() * total
	var last *Deployment
	for _, d := range g.Deployments {
		if !r.eligible(d, f) {
			continue
		}
		w := shuffleWeight(g, d)
		if x < w {
			return d
		}
		x -= w
		last = d
	}
	return last
}

// leastBusy picks the fewest calls in flight; ties go to a random one.
func (r *Router) leastBusy(g *Group, f *filter) *Deployment {
	var best *Deployment
	bestN, ties := int64(math.MaxInt64), 0
	for _, d := range g.Deployments {
		if !r.eligible(d, f) {
			continue
		}
		n := d.health.inflight.Load()
		switch {
		case n < bestN:
			best, bestN, ties = d, n, 1
		case n == bestN:
			ties++
			if rand.IntN(ties) == 0 {
				best = d
			}
		}
	}
	return best
}

// lowestLatency picks among the deployments whose moving-average latency
// (time to first token, for streams) is within the buffer of the fastest.
// Unmeasured deployments count as fastest, so each gets tried.
func (r *Router) lowestLatency(g *Group, f *filter, stream bool) *Deployment {
	value := func(d *Deployment) float64 {
		if stream {
			if v := load(&d.health.ttft); v > 0 {
				return v
			}
		}
		return load(&d.health.latency)
	}
	min := math.Inf(1)
	for _, d := range g.Deployments {
		if r.eligible(d, f) {
			if v := value(d); v < min {
				min = v
			}
		}
	}
	if math.IsInf(min, 1) {
		return nil
	}
	limit := min * (1 + r.set.LatencyBuffer)
	var pick *Deployment
	n := 0
	for _, d := range g.Deployments {
		if r.eligible(d, f) && value(d) <= limit {
			n++
			if rand.IntN(n) == 0 {
				pick = d
			}
		}
	}
	return pick
}

// mostHeadroom picks the deployment furthest from its rpm/tpm limits this
// minute; deployments at a limit are not eligible.
func (r *Router) mostHeadroom(g *Group, f *filter) *Deployment {
	var best *Deployment
	bestU, ties := math.Inf(1), 0
	for _, d := range g.Deployments {
		if !r.eligible(d, f) {
			continue
		}
		reqs, toks := d.health.usage(f.now)
		u := 0.0
		if d.RPM > 0 {
			u = float64(reqs) / float64(d.RPM)
		}
		if d.TPM > 0 {
			u = math.Max(u, float64(toks)/float64(d.TPM))
		}
		switch {
		case u < bestU:
			best, bestU, ties = d, u, 1
		case u == bestU:
			ties++
			if rand.IntN(ties) == 0 {
				best = d
			}
		}
	}
	return best
}

// cheapest picks the lowest input+output price per token; deployments
// without a price come after priced ones.
func (r *Router) cheapest(g *Group, f *filter) *Deployment {
	var best *Deployment
	bestC, ties := math.Inf(1), 0
	for _, d := range g.Deployments {
		if !r.eligible(d, f) {
			continue
		}
		c := d.Price.Input + d.Price.Output
		if c <= 0 {
			c = math.MaxFloat64
		}
		switch {
		case c < bestC:
			best, bestC, ties = d, c, 1
		case c == bestC:
			ties++
			if rand.IntN(ties) == 0 {
				best = d
			}
		}
	}
	return best
}
