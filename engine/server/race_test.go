//go:build race

package server

// raceEnabled: the race detector slows everything about tenfold.
const raceEnabled = true
