package config

import (
	"net"
	"slices"
	"strings"
)

// CAServerNames returns the names and addresses the certificate API's
// server certificate must carry, besides the API's own defaults
// (istiod.istio-system.svc, localhost, 127.0.0.1 and ::1), so that a
// client on another host verifies it by the address it dials:
//
//   - ca.server_names: DNS names go to dns, IP literals to ips;
//   - the IP of every listen and advertised address node.yaml gives this
//     node that names one host: ca.addr, bind_addr, admin_addr,
//     gateway_addr, gossip.bind, gossip.advertise, raft.bind,
//     raft.advertise, bridge.addr and bridge.advertise. go-sockaddr
//     templates are rendered against this host's interfaces.
//
// Unspecified addresses (0.0.0.0, ::), 127.0.0.1 and ::1 (already in the
// defaults), "localhost" and host names in address fields are left out:
// name them in ca.server_names. A template that renders no single IP is
// an error naming the field. Each name or address appears once, in the
// order above.
func (n *Node) CAServerNames() (dns []string, ips []net.IP, err error) {
	addIP := func(ip net.IP) {
		if ip == nil || ip.IsUnspecified() || ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback) || slices.ContainsFunc(ips, ip.Equal) {
			return
		}
		ips = append(ips, ip)
	}
	for _, s := range n.CA.ServerNames {
		if ip := net.ParseIP(s); ip != nil {
			addIP(ip)
			continue
		}
		if !slices.Contains(dns, s) {
			dns = append(dns, s)
		}
	}
	// fields are (node.yaml key, value, whether the value is host:port).
	fields := []struct {
		key, v   string
		hostPort bool
	}{
		{"ca.addr", n.CA.Addr, true},
		{"bind_addr", n.BindAddr, false},
		{"admin_addr", n.AdminAddr, true},
		{"gateway_addr", n.GatewayAddr, true},
		{"gossip.bind", n.Gossip.Bind, false},
		{"gossip.advertise", n.Gossip.Advertise, false},
		{"raft.bind", n.Raft.Bind, false},
		{"raft.advertise", n.Raft.Advertise, false},
		{"bridge.addr", n.Bridge.Addr, true},
		{"bridge.advertise", n.Bridge.Advertise, true},
	}
	for _, f := range fields {
		host := f.v
		if f.hostPort {
			host = addrHost(f.v)
		}
		if host == "" || host == "localhost" {
			continue
		}
		if !isTemplate(host) {
			addIP(net.ParseIP(host)) // a host name is skipped (nil)
			continue
		}
		s, err := ResolveBindIP(f.key, host)
		if err != nil {
			return nil, nil, err
		}
		addIP(net.ParseIP(s))
	}
	return dns, ips, nil
}

// addrHost is the host of a listen address "host:port", where host may be
// a go-sockaddr template (which may itself hold colons); "" when s has
// none.
func addrHost(s string) string {
	if i := strings.LastIndex(s, "}}"); i >= 0 && isTemplate(s) {
		return s[:i+2]
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return ""
	}
	return host
}

// checkServerName says what is wrong with a ca.server_names entry (an IP
// address literal or a lowercase DNS name, "*." wildcard allowed as the
// whole first label), or "".
func checkServerName(s string) string {
	if _, ok := parseIP(s); ok {
		return ""
	}
	if len(s) > 253 {
		return "is longer than 253 characters"
	}
	if err := checkHost(s, true, false); err != nil {
		return "must be an IP address or a lowercase DNS name: " + err.Error()
	}
	return ""
}
