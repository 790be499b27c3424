//go:build race

package cache

// raceEnabled: the race detector changes allocation counts.
const raceEnabled = true
