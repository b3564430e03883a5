package ratelimit

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// register adds c to reg, or returns the collector already registered under the same
// description, so that several guards or limiters may share one registry. A nil reg
// registers nothing.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
