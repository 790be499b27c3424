//go:build !unix

package sqlite

import "time"

// cpuTime is unknown here; benchmarks then skip the metric.
func cpuTime() time.Duration { return 0 }
