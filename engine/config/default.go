package config

import _ "embed"

//go:embed default.yaml
var defaultYAML []byte

// Default returns the embedded default configuration (mock models only).
func Default() *Config {
	c, err := Parse(defaultYAML, "embedded default", nil)
	if err != nil {
		panic("embedded default config: " + err.Error())
	}
	return c
}
