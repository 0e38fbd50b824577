package pki_test

import (
	"errors"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(*pki.Config)
		field string // "" = valid
	}{
		{"defaults with a KEK", func(*pki.Config) {}, ""},
		{"linger off", func(c *pki.Config) { c.AuditLinger = 0 }, ""},
		{"linger 1s", func(c *pki.Config) { c.AuditLinger = time.Second }, ""},
		{"negative linger", func(c *pki.Config) { c.AuditLinger = -time.Millisecond }, "AuditLinger"},
		{"linger above 1s", func(c *pki.Config) { c.AuditLinger = time.Second + 1 }, "AuditLinger"},
		{"no KEK", func(c *pki.Config) { c.KEKFile = "" }, "KEKFile"},
		{"zero audit timeout", func(c *pki.Config) { c.AuditTimeout = 0 }, "AuditTimeout"},
		{"zero batch", func(c *pki.Config) { c.AuditMaxBatch = 0 }, "AuditMaxBatch"},
		{"bad node ID", func(c *pki.Config) { c.NodeID = "node#1" }, "NodeID"},
		{"negative rate", func(c *pki.Config) { c.RateLimit = -1 }, "RateLimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pki.DefaultConfig()
			cfg.KEKFile = "/nonexistent/kek" // Validate does not read it
			tc.mod(&cfg)
			err := cfg.Validate()
			var ce *pki.ConfigError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, pki.ErrInvalidConfig)):
				t.Fatalf("Validate() = %v, want a *ConfigError for field %s wrapping ErrInvalidConfig", err, tc.field)
			}
		})
	}
}
