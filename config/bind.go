package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	sockaddrtemplate "github.com/hashicorp/go-sockaddr/template"
)

// ErrBindTemplate is returned by ResolveBindIP for a template that renders
// no address, several, or something that is not an IP address.
var ErrBindTemplate = errors.New("config: bind address template")

// ResolveBindIP turns a bind address from node.yaml into one literal IP
// address: a literal IP is returned as it is, a go-sockaddr template
// (`{{ GetPrivateIP }}`) is rendered against this host's interfaces and
// must give exactly one IP address. field names the setting in errors
// ("bind_addr"). A template that renders empty is an error, never "every
// address": binding all interfaces must be asked for with 0.0.0.0 or ::.
func ResolveBindIP(field, s string) (string, error) {
	if !isTemplate(s) {
		if _, err := netip.ParseAddr(s); err != nil {
			return "", fmt.Errorf("%s %q: not an IP address or a go-sockaddr template", field, s)
		}
		return s, nil
	}
	out, err := sockaddrtemplate.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %s %q: %w", ErrBindTemplate, field, s, err)
	}
	fields := strings.Fields(out)
	switch len(fields) {
	case 0:
		return "", fmt.Errorf("%w: %s %q rendered no address on this host (give 0.0.0.0 to bind every address)", ErrBindTemplate, field, s)
	case 1:
	default:
		return "", fmt.Errorf("%w: %s %q rendered %d addresses (%s), want one", ErrBindTemplate, field, s, len(fields), strings.Join(fields, " "))
	}
	if _, err := netip.ParseAddr(fields[0]); err != nil {
		return "", fmt.Errorf("%w: %s %q rendered %q, not an IP address", ErrBindTemplate, field, s, fields[0])
	}
	return fields[0], nil
}
