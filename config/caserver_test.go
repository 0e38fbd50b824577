package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestCAServerNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		wantDNS []string
		wantIPs []string
	}{
		{"defaults name nothing more", "", nil, nil},
		{"standalone node on one address", "ca: {addr: '10.0.0.5:15012'}\n", nil, []string{"10.0.0.5"}},
		{"a second loopback address is named", "ca: {addr: '127.0.0.2:15012'}\n", nil, []string{"127.0.0.2"}},
		{"127.0.0.1 and ::1 are already defaults", "ca: {addr: '127.0.0.1:15012'}\nadmin_addr: '[::1]:15000'\n", nil, nil},
		{"host-less ca.addr follows bind_addr", "bind_addr: 10.0.0.5\nca: {addr: ':15012'}\n", nil, []string{"10.0.0.5"}},
		{"every listen and advertised address, once each", `bind_addr: 10.0.0.5
admin_addr: 10.0.1.5:15000
gateway_addr: 192.0.2.10:15443
gossip: {bind: 10.0.0.5, advertise: 192.0.2.10}
raft: {bind: 0.0.0.0, advertise: 192.0.2.11}
bridge: {addr: '10.0.2.5:15008', advertise: '192.0.2.12:15008'}
ca: {addr: '0.0.0.0:15012'}
`, nil, []string{"10.0.0.5", "10.0.1.5", "192.0.2.10", "192.0.2.11", "10.0.2.5", "192.0.2.12"}},
		{"server names first, IPs apart from names", "ca: {addr: '10.0.0.5:15012', server_names: [ca.example.com, 203.0.113.7, '*.ca.example.org', ca.example.com, '2001:db8::7', 10.0.0.5]}\n",
			[]string{"ca.example.com", "*.ca.example.org"}, []string{"203.0.113.7", "2001:db8::7", "10.0.0.5"}},
		{"templates are rendered", "bind_addr: '{{ \"10.9.8.7\" }}'\ngateway_addr: '{{ \"192.0.2.99\" }}:15443'\n", nil, []string{"10.9.8.7", "192.0.2.99"}},
		{"host names and localhost in addresses are left out", "gateway_addr: gw.example.com:15443\nadmin_addr: localhost:15000\n", nil, nil},
		{"unspecified IPv6 is left out", "ca: {addr: '[::]:15012'}\n", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNode("node.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatalf("ParseNode(%q): %v", tc.yaml, err)
			}
			dns, ips, err := n.CAServerNames()
			if err != nil {
				t.Fatalf("CAServerNames() of %q: %v", tc.yaml, err)
			}
			var got []string
			for _, ip := range ips {
				got = append(got, ip.String())
			}
			if !reflect.DeepEqual(dns, tc.wantDNS) || !reflect.DeepEqual(got, tc.wantIPs) {
				t.Errorf("CAServerNames() of %q = %q, %q; want %q, %q", tc.yaml, dns, got, tc.wantDNS, tc.wantIPs)
			}
		})
	}
}

func TestCAServerNamesTemplateError(t *testing.T) {
	n := DefaultNode()
	n.GatewayAddr = `{{ GetAllInterfaces | include "name" "mg-no-such-if0" | attr "address" }}:15443`
	if err := n.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	_, _, err := n.CAServerNames()
	if !errors.Is(err, ErrBindTemplate) || !strings.Contains(err.Error(), "gateway_addr") {
		t.Fatalf("CAServerNames() with a gateway_addr template that renders nothing = %v; want ErrBindTemplate naming gateway_addr", err)
	}
}

func TestAddrHost(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:15012":              "10.0.0.1",
		"[2001:db8::1]:15012":         "2001:db8::1",
		":15012":                      "",
		"15012":                       "",
		`{{ GetPrivateIP }}:15012`:    `{{ GetPrivateIP }}`,
		`{{ "[::1]:x" }}:15012`:       `{{ "[::1]:x" }}`,
		"":                            "",
		"}}:1":                        "}}",
		"{{:1":                        "{{",
		strings.Repeat(":", 20) + "1": "",
	} {
		if got := addrHost(in); got != want {
			t.Errorf("addrHost(%q) = %q, want %q", in, got, want)
		}
	}
}
