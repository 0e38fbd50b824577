package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/meshgate/meshgate/config"
)

// errUnknownKind is returned by parseKind for a name that is no kind
// meshgate reads.
var errUnknownKind = errors.New("unknown kind")

// kindShortNames are the short names istioctl and kubectl accept for the
// networking.istio.io kinds.
var kindShortNames = map[config.Kind]string{
	config.KindGateway:         "gw",
	config.KindVirtualService:  "vs",
	config.KindDestinationRule: "dr",
	config.KindServiceEntry:    "se",
	config.KindWorkloadEntry:   "we",
}

// kindAliases maps every accepted spelling, lower-cased, to its kind: the
// kind ("DestinationRule"), its plural ("destinationrules"), its short
// name ("dr"), and the singular or plural with the API group
// ("destinationrules.networking.istio.io"), as kubectl accepts them.
var kindAliases = func() map[string]config.Kind {
	m := map[string]config.Kind{}
	for _, k := range config.Kinds {
		singular := strings.ToLower(string(k))
		plural := singular + "s"
		if n := len(singular); n > 1 && singular[n-1] == 'y' && !strings.ContainsRune("aeiou", rune(singular[n-2])) {
			plural = singular[:n-1] + "ies" // entry: entries; gateway: gateways
		}
		for _, n := range []string{singular, plural, kindShortNames[k]} {
			m[n] = k
		}
		for _, n := range []string{singular, plural} {
			m[n+".networking.istio.io"] = k
		}
	}
	return m
}()

// parseKind turns a kind name from the command line (any case, singular,
// plural, short name or with the API group) into a config.Kind. An
// unknown name is an error naming it and listing the accepted kinds.
func parseKind(s string) (config.Kind, error) {
	if k, ok := kindAliases[strings.ToLower(strings.TrimSpace(s))]; ok {
		return k, nil
	}
	return "", fmt.Errorf("%w %q: want one of %s", errUnknownKind, s, kindList())
}

// kindList is the accepted kinds with their short names, for messages and
// help: "Gateway (gw), VirtualService (vs), ...".
func kindList() string {
	var parts []string
	for _, k := range config.Kinds {
		parts = append(parts, fmt.Sprintf("%s (%s)", k, kindShortNames[k]))
	}
	return strings.Join(parts, ", ")
}
