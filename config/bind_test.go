package config_test

import (
	"errors"
	"testing"

	"github.com/meshgate/meshgate/config"
)

func TestResolveBindIP(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error // nil: success; ErrBindTemplate or any error (errAny)
	}{
		{"literal v4", "127.0.0.1", "127.0.0.1", nil},
		{"literal v6", "::1", "::1", nil},
		{"wildcard", "0.0.0.0", "0.0.0.0", nil},
		{"loopback template", `{{ GetAllInterfaces | include "flags" "loopback" | include "type" "IPv4" | attr "address" }}`, "127.0.0.1", nil},
		{"template rendering empty", `{{ GetAllInterfaces | include "name" "no-such-interface0" | attr "address" }}`, "", config.ErrBindTemplate},
		{"template rendering several", `{{ GetAllInterfaces | include "flags" "loopback" | join "address" " " }}`, "", config.ErrBindTemplate},
		{"template rendering a non-IP", `{{ "eth0" }}`, "", config.ErrBindTemplate},
		{"broken template", `{{ GetPrivateIP `, "", errAny},
		{"hostname", "example.internal", "", errAny},
		{"empty", "", "", errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := config.ResolveBindIP("bind_addr", tc.in)
			if tc.err == nil {
				if err != nil || got != tc.want {
					t.Fatalf("ResolveBindIP(%q) = %q, %v; want %q, nil", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ResolveBindIP(%q) = %q, nil; want an error", tc.in, got)
			}
			if tc.err != errAny && !errors.Is(err, tc.err) {
				t.Fatalf("ResolveBindIP(%q) error = %v; want %v", tc.in, err, tc.err)
			}
		})
	}
}

var errAny = errors.New("any error")
