package keys

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Period is a parsed budget_duration: a fixed length, or calendar months.
type Period struct {
	Fixed  time.Duration
	Months int
}

// IsZero reports whether the budget never resets.
func (p Period) IsZero() bool { return p.Fixed == 0 && p.Months == 0 }

// ParsePeriod reads LiteLLM's budget_duration: "30s", "30m", "1h", "1d",
// "7d", "30d", "1w", "1mo", "monthly", "weekly", "daily", "yearly". Empty
// means never.
func ParsePeriod(s string) (Period, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	switch s {
	case "":
		return Period{}, nil
	case "daily":
		return Period{Fixed: 24 * time.Hour}, nil
	case "weekly":
		return Period{Fixed: 7 * 24 * time.Hour}, nil
	case "monthly":
		return Period{Months: 1}, nil
	case "yearly", "annually":
		return Period{Months: 12}, nil
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || n <= 0 {
		return Period{}, fmt.Errorf("budget_duration %q: want a number and a unit (30s, 1h, 1d, 30d, 1mo) or monthly", s)
	}
	switch s[i:] {
	case "s":
		return Period{Fixed: time.Duration(n) * time.Second}, nil
	case "m", "min":
		return Period{Fixed: time.Duration(n) * time.Minute}, nil
	case "h":
		return Period{Fixed: time.Duration(n) * time.Hour}, nil
	case "d":
		return Period{Fixed: time.Duration(n) * 24 * time.Hour}, nil
	case "w":
		return Period{Fixed: time.Duration(n) * 7 * 24 * time.Hour}, nil
	case "mo":
		return Period{Months: n}, nil
	case "y":
		return Period{Months: 12 * n}, nil
	}
	return Period{}, fmt.Errorf("budget_duration %q: unknown unit %q", s, s[i:])
}

// Next returns the first reset time after from. Monthly periods reset at
// the start of a calendar month (UTC), as LiteLLM's "monthly" does.
func (p Period) Next(from time.Time) time.Time {
	from = from.UTC()
	if p.Months > 0 {
		y, m, _ := from.Date()
		return time.Date(y, m+time.Month(p.Months), 1, 0, 0, 0, 0, time.UTC)
	}
	return from.Add(p.Fixed)
}

// ParseDuration reads a key's "duration" (expiry): the same units, no
// calendar names.
func ParseDuration(s string) (time.Duration, error) {
	p, err := ParsePeriod(s)
	if err != nil {
		return 0, err
	}
	if p.Months > 0 {
		return time.Duration(p.Months) * 30 * 24 * time.Hour, nil
	}
	return p.Fixed, nil
}
