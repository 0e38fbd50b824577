package config

import (
	"errors"
	"strings"
	"testing"
)

// validationCase is one resource spec and what Parse must say about it.
// An empty field with a nil sentinel means the spec must be accepted.
type validationCase struct {
	name     string
	spec     string // YAML under "spec:", indented two spaces
	field    string
	sentinel error
}

func runValidation(t *testing.T, kind string, cases []validationCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := doc(kind, "r", tc.spec)
			if tc.sentinel == nil {
				if _, err := Parse("v.yaml", []byte(data)); err != nil {
					t.Fatalf("Parse(%s) error:\n%v\nwant nil (valid); input:\n%s", kind, err, data)
				}
				return
			}
			wantProblem(t, data, tc.field, tc.sentinel)
		})
	}
}

const tlsServer = "  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*.example.com']\n"

// casesGateway are the Gateway rows, shared with FuzzParse.
func casesGateway() []validationCase {
	server := func(s string) string { return "  servers:\n  - " + strings.TrimPrefix(s, "  - ") }
	return []validationCase{
		{"valid passthrough", tlsServer + "    tls: {mode: PASSTHROUGH}\n", "", nil},
		{"valid empty tls means PASSTHROUGH", tlsServer + "    tls: {}\n", "", nil},
		{"valid auto passthrough", server("port: {number: 15443, name: tls, protocol: TLS}\n    hosts: ['*.local']\n    tls: {mode: AUTO_PASSTHROUGH}\n"), "", nil},
		{"valid https passthrough", server("port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: PASSTHROUGH}\n"), "", nil},
		{"valid lower-case protocol", server("port: {number: 443, name: tls, protocol: tls}\n    hosts: [a.example.com]\n    tls: {mode: PASSTHROUGH}\n"), "", nil},
		{"valid plain tcp", server("port: {number: 5432, name: pg, protocol: TCP}\n    hosts: ['*']\n"), "", nil},
		{"valid unix socket bind", server("port: {number: 0, name: uds, protocol: TCP}\n    bind: unix:///run/meshgate/pg.sock\n    hosts: ['*']\n"), "", nil},
		{"valid short unix path bind", server("port: {number: 0, name: uds, protocol: TCP}\n    bind: /run/pg.sock\n    hosts: ['*']\n"), "", nil},
		{"valid abstract socket bind", server("port: {number: 0, name: uds, protocol: TCP}\n    bind: '@meshgate-pg'\n    hosts: ['*']\n"), "", nil},
		{"valid IP bind", server("port: {number: 5432, name: pg, protocol: TCP}\n    bind: '::1'\n    hosts: ['*']\n"), "", nil},
		{"valid namespaced hosts", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*/a.example.com', './*', '~/b.example.com', 'prod/*.example.com']\n    tls: {mode: PASSTHROUGH}\n"), "", nil},

		{"no servers", "  selector: {istio: eastwestgateway}\n", "spec.servers", ErrInvalid},
		{"no hosts", server("port: {number: 443, name: tls, protocol: TLS}\n    tls: {}\n"), "spec.servers[0].hosts", ErrInvalid},
		{"upper-case host", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: [Example.com]\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"partial wildcard host", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*foo.example.com']\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"wildcard in the middle", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['a.*.example.com']\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"numeric top-level label", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.b.123]\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"trailing dot", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.example.com.]\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"bad host namespace", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['Bad_NS/a.example.com']\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"empty host namespace", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['/a.example.com']\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"host too long", server("port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['" + strings.Repeat("a.", 128) + "com']\n    tls: {}\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"missing port", server("hosts: ['*']\n"), "spec.servers[0].port", ErrInvalid},
		{"port 70000", server("port: {number: 70000, name: t, protocol: TCP}\n    hosts: ['*']\n"), "spec.servers[0].port.number", ErrInvalid},
		{"port 0 without unix bind", server("port: {number: 0, name: t, protocol: TCP}\n    hosts: ['*']\n"), "spec.servers[0].port.number", ErrInvalid},
		{"unix bind with a port", server("port: {number: 443, name: t, protocol: TCP}\n    bind: unix:///run/x.sock\n    hosts: ['*']\n"), "spec.servers[0].port.number", ErrInvalid},
		{"relative unix path", server("port: {number: 0, name: t, protocol: TCP}\n    bind: unix://run/x.sock\n    hosts: ['*']\n"), "spec.servers[0].bind", ErrInvalid},
		{"unix path is a folder", server("port: {number: 0, name: t, protocol: TCP}\n    bind: /run/\n    hosts: ['*']\n"), "spec.servers[0].bind", ErrInvalid},
		{"empty abstract name", server("port: {number: 0, name: t, protocol: TCP}\n    bind: '@'\n    hosts: ['*']\n"), "spec.servers[0].bind", ErrInvalid},
		{"bind is an interface name", server("port: {number: 1, name: t, protocol: TCP}\n    bind: eth0\n    hosts: ['*']\n"), "spec.servers[0].bind", ErrInvalid},
		{"missing port name", server("port: {number: 1, protocol: TCP}\n    hosts: ['*']\n"), "spec.servers[0].port.name", ErrInvalid},
		{"missing protocol", server("port: {number: 1, name: t}\n    hosts: ['*']\n"), "spec.servers[0].port.protocol", ErrInvalid},
		{"unknown protocol", server("port: {number: 1, name: t, protocol: QUIC}\n    hosts: ['*']\n"), "spec.servers[0].port.protocol", ErrInvalid},
		{"HTTP protocol", server("port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"), "spec.servers[0].port.protocol", ErrUnsupported},
		{"GRPC protocol", server("port: {number: 80, name: grpc, protocol: GRPC}\n    hosts: ['*']\n"), "spec.servers[0].port.protocol", ErrUnsupported},
		{"MONGO protocol", server("port: {number: 27017, name: mongo, protocol: MONGO}\n    hosts: ['*']\n"), "spec.servers[0].port.protocol", ErrUnsupported},
		{"TLS without tls settings", tlsServer, "spec.servers[0].tls", ErrInvalid},
		{"TCP with tls settings", server("port: {number: 1, name: t, protocol: TCP}\n    hosts: ['*']\n    tls: {mode: PASSTHROUGH}\n"), "spec.servers[0].tls", ErrInvalid},
		{"SIMPLE", tlsServer + "    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}\n", "spec.servers[0].tls.mode", ErrUnsupported},
		{"MUTUAL", tlsServer + "    tls: {mode: MUTUAL}\n", "spec.servers[0].tls.mode", ErrUnsupported},
		{"valid ISTIO_MUTUAL", tlsServer + "    tls: {mode: ISTIO_MUTUAL}\n", "", nil},
		{"valid ISTIO_MUTUAL with subjectAltNames", tlsServer + "    tls: {mode: ISTIO_MUTUAL, subjectAltNames: ['spiffe://cluster.local/ns/default/sa/web']}\n", "", nil},
		{"ISTIO_MUTUAL on HTTPS", server("port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: ISTIO_MUTUAL}\n"), "spec.servers[0].tls.mode", ErrUnsupported},
		{"ISTIO_MUTUAL with a certificate", tlsServer + "    tls: {mode: ISTIO_MUTUAL, serverCertificate: /c.pem}\n", "spec.servers[0].tls.serverCertificate", ErrInvalid},
		{"ISTIO_MUTUAL with credentialName", tlsServer + "    tls: {mode: ISTIO_MUTUAL, credentialName: my-cert}\n", "spec.servers[0].tls.credentialName", ErrInvalid},
		{"ISTIO_MUTUAL with caCertificates", tlsServer + "    tls: {mode: ISTIO_MUTUAL, caCertificates: /ca.pem}\n", "spec.servers[0].tls.caCertificates", ErrInvalid},
		{"ISTIO_MUTUAL with minProtocolVersion", tlsServer + "    tls: {mode: ISTIO_MUTUAL, minProtocolVersion: TLSV1_3}\n", "spec.servers[0].tls.minProtocolVersion", ErrInvalid},
		{"ISTIO_MUTUAL with verifyCertificateSpki", tlsServer + "    tls: {mode: ISTIO_MUTUAL, verifyCertificateSpki: [abc]}\n", "spec.servers[0].tls.verifyCertificateSpki", ErrInvalid},
		{"ISTIO_MUTUAL SAN not spiffe", tlsServer + "    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [web.default.svc]}\n", "spec.servers[0].tls.subjectAltNames[0]", ErrInvalid},
		{"ISTIO_MUTUAL SAN bad path", tlsServer + "    tls: {mode: ISTIO_MUTUAL, subjectAltNames: ['spiffe://cluster.local/web']}\n", "spec.servers[0].tls.subjectAltNames[0]", ErrInvalid},
		{"ISTIO_MUTUAL SAN empty namespace", tlsServer + "    tls: {mode: ISTIO_MUTUAL, subjectAltNames: ['spiffe://cluster.local/ns//sa/web']}\n", "spec.servers[0].tls.subjectAltNames[0]", ErrInvalid},
		{"ISTIO_MUTUAL SAN with a query", tlsServer + "    tls: {mode: ISTIO_MUTUAL, subjectAltNames: ['spiffe://cluster.local/ns/a/sa/web?x=1']}\n", "spec.servers[0].tls.subjectAltNames[0]", ErrInvalid},
		{"OPTIONAL_MUTUAL", tlsServer + "    tls: {mode: OPTIONAL_MUTUAL}\n", "spec.servers[0].tls.mode", ErrUnsupported},
		{"AUTO_PASSTHROUGH on HTTPS", server("port: {number: 15443, name: tls, protocol: HTTPS}\n    hosts: ['*.local']\n    tls: {mode: AUTO_PASSTHROUGH}\n"), "spec.servers[0].tls.mode", ErrInvalid},
		{"certificate on passthrough", tlsServer + "    tls: {mode: PASSTHROUGH, credentialName: my-cert}\n", "spec.servers[0].tls.credentialName", ErrInvalid},
		{"httpsRedirect on passthrough", tlsServer + "    tls: {mode: PASSTHROUGH, httpsRedirect: true}\n", "spec.servers[0].tls.httpsRedirect", ErrInvalid},
		{"min TLS version on auto passthrough", server("port: {number: 15443, name: tls, protocol: TLS}\n    hosts: ['*.local']\n    tls: {mode: AUTO_PASSTHROUGH, minProtocolVersion: TLSV1_2}\n"), "spec.servers[0].tls.minProtocolVersion", ErrInvalid},
		{"duplicate server name", "  servers:\n  - name: a\n    port: {number: 1, name: t1, protocol: TCP}\n    hosts: ['*']\n  - name: a\n    port: {number: 2, name: t2, protocol: TCP}\n    hosts: ['*']\n", "spec.servers[1].name", ErrInvalid},
		{"duplicate port name", "  servers:\n  - port: {number: 1, name: t, protocol: TCP}\n    hosts: ['*']\n  - port: {number: 2, name: t, protocol: TCP}\n    hosts: ['*']\n", "spec.servers[1].port.name", ErrInvalid},
		{"targetPort", server("port: {number: 1, name: t, protocol: TCP, targetPort: 2}\n    hosts: ['*']\n"), "spec.servers[0].port.targetPort", ErrInvalid},
		{"defaultEndpoint", server("port: {number: 1, name: t, protocol: TCP}\n    hosts: ['*']\n    defaultEndpoint: 127.0.0.1:8080\n"), "spec.servers[0].defaultEndpoint", ErrUnsupported},
		{"bad selector value", "  selector: {app: 'a b'}\n" + tlsServer + "    tls: {}\n", "spec.selector.app", ErrInvalid},
	}
}

func TestValidateGateway(t *testing.T) {
	runValidation(t, "Gateway", casesGateway())
}

const vsHead = "  hosts: ['*.example.com']\n  gateways: [edge]\n"

func tlsRoute(match, route string) string {
	return vsHead + "  tls:\n  - match:\n    - " + match + "\n    route:\n" + route
}

const oneDest = "    - destination: {host: reviews.default.svc.cluster.local}\n"

// casesVirtualService are the VirtualService rows, shared with FuzzParse.
func casesVirtualService() []validationCase {
	return []validationCase{
		{"valid tls route", tlsRoute("sniHosts: [a.example.com]", oneDest), "", nil},
		{"valid relative weights 1:3", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.default.svc.cluster.local}\n      weight: 1\n    - destination: {host: b.default.svc.cluster.local}\n      weight: 3\n"), "", nil},
		{"valid weights summing to 100", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b, subset: v1}\n      weight: 75\n    - destination: {host: a.b, subset: v2}\n      weight: 25\n"), "", nil},
		{"valid single route weight 0", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n      weight: 0\n"), "", nil},
		{"valid wildcard sni", tlsRoute("sniHosts: ['*.example.com']", oneDest), "", nil},
		{"valid catch-all on gateway only", "  hosts: ['*']\n  gateways: [istio-system/edge]\n  tls:\n  - match:\n    - sniHosts: ['*']\n    route:\n" + oneDest, "", nil},
		{"valid tcp without match", vsHead + "  tcp:\n  - route:\n" + oneDest, "", nil},
		{"valid short destination host", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: reviews}\n"), "", nil},
		// Weights are relative (istio.io/api: share = weight/sum, 0 = no
		// traffic); neither a 0..100 range nor a sum of 100 is required.
		{"valid weight above 100", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n      weight: 150\n    - destination: {host: c.d}\n      weight: 50\n"), "", nil},
		{"valid weights summing to 90", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n      weight: 60\n    - destination: {host: c.d}\n      weight: 30\n"), "", nil},
		{"valid weight 0 with a positive one", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n      weight: 0\n    - destination: {host: c.d}\n      weight: 1\n"), "", nil},
		{"valid single weight 150", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n      weight: 150\n"), "", nil},
		{"valid tcp weights summing to 3", vsHead + "  tcp:\n  - route:\n    - destination: {host: a.b}\n      weight: 1\n    - destination: {host: c.d}\n      weight: 2\n", "", nil},
		// Implemented match fields: the source of a gateway-bound route is
		// the gateway (its namespace, the node's labels).
		{"valid tls sourceNamespace", tlsRoute("sniHosts: [a.example.com]\n      sourceNamespace: istio-system", oneDest), "", nil},
		{"valid tls sourceLabels", tlsRoute("sniHosts: [a.example.com]\n      sourceLabels: {istio: eastwestgateway}", oneDest), "", nil},
		{"valid tcp sourceNamespace", vsHead + "  tcp:\n  - match:\n    - sourceNamespace: istio-system\n    route:\n" + oneDest, "", nil},
		{"valid tcp sourceLabels", vsHead + "  tcp:\n  - match:\n    - sourceLabels: {zone: z1}\n    route:\n" + oneDest, "", nil},
		{"valid exportTo .", vsHead + "  exportTo: ['.']\n  tcp:\n  - route:\n" + oneDest, "", nil},
		{"valid exportTo *", vsHead + "  exportTo: ['*']\n  tcp:\n  - route:\n" + oneDest, "", nil},
		{"valid exportTo namespaces", vsHead + "  exportTo: ['.', istio-system, shop]\n  tcp:\n  - route:\n" + oneDest, "", nil},

		{"no hosts", "  gateways: [edge]\n  tcp:\n  - route:\n" + oneDest, "spec.hosts", ErrInvalid},
		{"bad host", "  hosts: ['a b']\n  gateways: [edge]\n  tcp:\n  - route:\n" + oneDest, "spec.hosts[0]", ErrInvalid},
		{"catch-all host bound to mesh", "  hosts: ['*']\n  gateways: [edge, mesh]\n  tcp:\n  - route:\n" + oneDest, "spec.hosts[0]", ErrInvalid},
		{"overlapping hosts", "  hosts: ['*.example.com', a.example.com]\n  gateways: [edge]\n  tcp:\n  - route:\n" + oneDest, "spec.hosts[1]", ErrInvalid},
		{"gateway ref with two slashes", "  hosts: [a.b]\n  gateways: [a/b/c]\n  tcp:\n  - route:\n" + oneDest, "spec.gateways[0]", ErrInvalid},
		{"legacy dotted gateway ref", "  hosts: [a.b]\n  gateways: [edge.istio-system.svc.cluster.local]\n  tcp:\n  - route:\n" + oneDest, "spec.gateways[0]", ErrInvalid},
		{"http routes", vsHead + "  http:\n  - route:\n" + oneDest, "spec.http", ErrUnsupported},
		{"no routes at all", vsHead, "spec", ErrInvalid},
		{"tls without match", vsHead + "  tls:\n  - route:\n" + oneDest, "spec.tls[0].match", ErrInvalid},
		{"match without sniHosts", tlsRoute("port: 443", oneDest), "spec.tls[0].match[0].sniHosts", ErrInvalid},
		{"sni is an IP", tlsRoute("sniHosts: [10.0.0.1]", oneDest), "spec.tls[0].match[0].sniHosts[0]", ErrInvalid},
		{"sni malformed", tlsRoute("sniHosts: ['a..example.com']", oneDest), "spec.tls[0].match[0].sniHosts[0]", ErrInvalid},
		{"sni outside hosts", tlsRoute("sniHosts: [a.example.org]", oneDest), "spec.tls[0].match[0].sniHosts[0]", ErrInvalid},
		{"sni wider than hosts", tlsRoute("sniHosts: ['*']", oneDest), "spec.tls[0].match[0].sniHosts[0]", ErrInvalid},
		{"match port 70000", tlsRoute("sniHosts: [a.example.com]\n      port: 70000", oneDest), "spec.tls[0].match[0].port", ErrInvalid},
		{"bad destination subnet", tlsRoute("sniHosts: [a.example.com]\n      destinationSubnets: [10.0.0.0/33]", oneDest), "spec.tls[0].match[0].destinationSubnets[0]", ErrInvalid},
		{"tls destinationSubnets", tlsRoute("sniHosts: [a.example.com]\n      destinationSubnets: [10.0.0.0/8]", oneDest), "spec.tls[0].match[0].destinationSubnets", ErrUnsupported},
		{"tcp destinationSubnets", vsHead + "  tcp:\n  - match:\n    - destinationSubnets: ['fd00::/8']\n    route:\n" + oneDest, "spec.tcp[0].match[0].destinationSubnets", ErrUnsupported},
		{"tcp sourceSubnet", vsHead + "  tcp:\n  - match:\n    - sourceSubnet: 192.0.2.0/24\n    route:\n" + oneDest, "spec.tcp[0].match[0].sourceSubnet", ErrUnsupported},
		{"tls sourceSubnet is reserved in Istio", tlsRoute("sniHosts: [a.example.com]\n      sourceSubnet: 192.0.2.0/24", oneDest), "spec.tls[0].match[0].sourceSubnet", ErrInvalid},
		{"tcp source namespace with a dot", vsHead + "  tcp:\n  - match:\n    - sourceNamespace: a.b\n    route:\n" + oneDest, "spec.tcp[0].match[0].sourceNamespace", ErrInvalid},
		{"tcp source labels not strings", vsHead + "  tcp:\n  - match:\n    - sourceLabels: {app: [a]}\n    route:\n" + oneDest, "spec.tcp[0].match[0].sourceLabels.app", ErrInvalid},
		{"bad match gateway", tlsRoute("sniHosts: [a.example.com]\n      gateways: ['Edge']", oneDest), "spec.tls[0].match[0].gateways[0]", ErrInvalid},
		{"bad source namespace", tlsRoute("sniHosts: [a.example.com]\n      sourceNamespace: 'a.b'", oneDest), "spec.tls[0].match[0].sourceNamespace", ErrInvalid},
		{"bad source labels", tlsRoute("sniHosts: [a.example.com]\n      sourceLabels: {app: 'a b'}", oneDest), "spec.tls[0].match[0].sourceLabels.app", ErrInvalid},
		{"tls without route", vsHead + "  tls:\n  - match:\n    - sniHosts: [a.example.com]\n", "spec.tls[0].route", ErrInvalid},
		{"route without destination", tlsRoute("sniHosts: [a.example.com]", "    - weight: 100\n"), "spec.tls[0].route[0].destination", ErrInvalid},
		{"destination without host", tlsRoute("sniHosts: [a.example.com]", "    - destination: {subset: v1}\n"), "spec.tls[0].route[0].destination.host", ErrInvalid},
		{"destination host catch-all", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: '*'}\n"), "spec.tls[0].route[0].destination.host", ErrInvalid},
		{"destination host wildcard", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: '*.example.com'}\n"), "spec.tls[0].route[0].destination.host", ErrUnsupported},
		{"bad subset name", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b, subset: V1}\n"), "spec.tls[0].route[0].destination.subset", ErrInvalid},
		{"destination port 0", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b, port: {number: 0}}\n"), "spec.tls[0].route[0].destination.port.number", ErrInvalid},
		{"negative weight", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n      weight: -10\n    - destination: {host: c.d}\n      weight: 110\n"), "spec.tls[0].route[0].weight", ErrInvalid},
		{"weights all zero", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n    - destination: {host: c.d}\n"), "spec.tls[0].route", ErrInvalid},
		{"weights overflow int32", tlsRoute("sniHosts: [a.example.com]", "    - destination: {host: a.b}\n      weight: 2147483647\n    - destination: {host: c.d}\n      weight: 2147483647\n"), "spec.tls[0].route", ErrInvalid},
		{"tcp without route", vsHead + "  tcp:\n  - match:\n    - port: 5432\n", "spec.tcp[0].route", ErrInvalid},
		{"tcp match port 70000", vsHead + "  tcp:\n  - match:\n    - port: 70000\n    route:\n" + oneDest, "spec.tcp[0].match[0].port", ErrInvalid},
		{"tcp bad source subnet", vsHead + "  tcp:\n  - match:\n    - sourceSubnet: nope\n    route:\n" + oneDest, "spec.tcp[0].match[0].sourceSubnet", ErrInvalid},
		{"exportTo none outside ServiceEntry", vsHead + "  exportTo: ['~']\n  tcp:\n  - route:\n" + oneDest, "spec.exportTo[0]", ErrInvalid},
		{"exportTo duplicate", vsHead + "  exportTo: ['.', default]\n  tcp:\n  - route:\n" + oneDest, "spec.exportTo[1]", ErrInvalid},
		{"exportTo star with others", vsHead + "  exportTo: ['*', a]\n  tcp:\n  - route:\n" + oneDest, "spec.exportTo", ErrInvalid},
		{"exportTo upper-case namespace", vsHead + "  exportTo: [Shop]\n  tcp:\n  - route:\n" + oneDest, "spec.exportTo[0]", ErrInvalid},
		{"exportTo empty entry", vsHead + "  exportTo: ['']\n  tcp:\n  - route:\n" + oneDest, "spec.exportTo[0]", ErrInvalid},
		{"exportTo not a list", vsHead + "  exportTo: '*'\n  tcp:\n  - route:\n" + oneDest, "spec.exportTo", ErrInvalid},
	}
}

func TestValidateVirtualService(t *testing.T) {
	runValidation(t, "VirtualService", casesVirtualService())
}

const drHost = "  host: reviews.default.svc.cluster.local\n"

func policy(p string) string { return drHost + "  trafficPolicy:\n" + p }

// casesDestinationRule are the DestinationRule rows, shared with FuzzParse.
func casesDestinationRule() []validationCase {
	return []validationCase{
		{"valid subsets", drHost + "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n", "", nil},
		{"valid LEAST_CONN alias", policy("    loadBalancer: {simple: LEAST_CONN}\n"), "", nil},
		{"valid UNSPECIFIED", policy("    loadBalancer: {simple: UNSPECIFIED}\n"), "", nil},
		{"valid idle timeout 0s turns it off", policy("    connectionPool: {tcp: {idleTimeout: 0s}}\n"), "", nil},
		{"valid tls DISABLE", policy("    tls: {mode: DISABLE}\n"), "", nil},
		{"valid wildcard host", "  host: '*.example.com'\n", "", nil},
		{"valid keepalive time interval probes", policy("    connectionPool: {tcp: {tcpKeepalive: {time: 30s, interval: 5s, probes: 4}}}\n"), "", nil},
		{"valid keepalive 127 probes", policy("    connectionPool: {tcp: {tcpKeepalive: {probes: 127}}}\n"), "", nil},
		{"valid exportTo .", drHost + "  exportTo: ['.']\n  subsets: [{name: v1, labels: {version: v1}}]\n", "", nil},
		{"valid exportTo namespace", drHost + "  exportTo: [istio-system]\n", "", nil},
		{"valid port level", policy("    portLevelSettings:\n    - port: {number: 80}\n      connectionPool: {tcp: {maxConnections: 0}}\n"), "", nil},

		{"no host", "  subsets: [{name: v1}]\n", "spec.host", ErrInvalid},
		{"bad host", "  host: 'a_b.c'\n", "spec.host", ErrInvalid},
		{"empty traffic policy", policy("    {}\n"), "spec.trafficPolicy", ErrInvalid},
		{"PASSTHROUGH balancer", policy("    loadBalancer: {simple: PASSTHROUGH}\n"), "spec.trafficPolicy.loadBalancer.simple", ErrUnsupported},
		{"consistent hash", policy("    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n"), "spec.trafficPolicy.loadBalancer.consistentHash", ErrUnsupported},
		{"locality lb", policy("    loadBalancer: {simple: RANDOM, localityLbSetting: {enabled: true}}\n"), "spec.trafficPolicy.loadBalancer.localityLbSetting", ErrUnsupported},
		{"warmup", policy("    loadBalancer: {simple: RANDOM, warmup: {duration: 10s}}\n"), "spec.trafficPolicy.loadBalancer.warmup", ErrUnsupported},
		{"empty connection pool", policy("    connectionPool: {}\n"), "spec.trafficPolicy.connectionPool", ErrInvalid},
		{"http connection pool", policy("    connectionPool: {http: {http1MaxPendingRequests: 10}}\n"), "spec.trafficPolicy.connectionPool.http", ErrUnsupported},
		{"negative max connections", policy("    connectionPool: {tcp: {maxConnections: -1}}\n"), "spec.trafficPolicy.connectionPool.tcp.maxConnections", ErrInvalid},
		{"connect timeout 0s", policy("    connectionPool: {tcp: {connectTimeout: 0s}}\n"), "spec.trafficPolicy.connectionPool.tcp.connectTimeout", ErrInvalid},
		{"connect timeout below 1ms", policy("    connectionPool: {tcp: {connectTimeout: 500us}}\n"), "spec.trafficPolicy.connectionPool.tcp.connectTimeout", ErrInvalid},
		{"connect timeout not whole ms", policy("    connectionPool: {tcp: {connectTimeout: 1500us}}\n"), "spec.trafficPolicy.connectionPool.tcp.connectTimeout", ErrInvalid},
		{"negative connect timeout", policy("    connectionPool: {tcp: {connectTimeout: -1s}}\n"), "spec.trafficPolicy.connectionPool.tcp.connectTimeout", ErrInvalid},
		{"keepalive time 0s", policy("    connectionPool: {tcp: {tcpKeepalive: {time: 0s}}}\n"), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time", ErrInvalid},
		{"keepalive interval 0s", policy("    connectionPool: {tcp: {tcpKeepalive: {interval: 0s}}}\n"), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval", ErrInvalid},
		{"keepalive 128 probes", policy("    connectionPool: {tcp: {tcpKeepalive: {probes: 128}}}\n"), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes", ErrInvalid},
		{"keepalive negative probes", policy("    connectionPool: {tcp: {tcpKeepalive: {probes: -1}}}\n"), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes", ErrInvalid},
		{"keepalive interval below 1ms", policy("    connectionPool: {tcp: {tcpKeepalive: {interval: 10us}}}\n"), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval", ErrInvalid},
		{"dr exportTo ~", drHost + "  exportTo: ['~']\n", "spec.exportTo[0]", ErrInvalid},
		{"dr exportTo duplicate", drHost + "  exportTo: [default, '.']\n", "spec.exportTo[1]", ErrInvalid},
		{"negative idle timeout", policy("    connectionPool: {tcp: {idleTimeout: -5s}}\n"), "spec.trafficPolicy.connectionPool.tcp.idleTimeout", ErrInvalid},
		{"max connection duration 0s", policy("    connectionPool: {tcp: {maxConnectionDuration: 0s}}\n"), "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration", ErrInvalid},
		{"negative 5xx errors", policy("    outlierDetection: {consecutive5xxErrors: -1}\n"), "spec.trafficPolicy.outlierDetection.consecutive5xxErrors", ErrInvalid},
		{"negative gateway errors", policy("    outlierDetection: {consecutiveGatewayErrors: -1}\n"), "spec.trafficPolicy.outlierDetection.consecutiveGatewayErrors", ErrInvalid},
		{"negative deprecated consecutive errors", policy("    outlierDetection: {consecutiveErrors: -1}\n"), "spec.trafficPolicy.outlierDetection.consecutiveErrors", ErrInvalid},
		{"interval 0s", policy("    outlierDetection: {interval: 0s}\n"), "spec.trafficPolicy.outlierDetection.interval", ErrInvalid},
		{"base ejection time 0s", policy("    outlierDetection: {baseEjectionTime: 0s}\n"), "spec.trafficPolicy.outlierDetection.baseEjectionTime", ErrInvalid},
		{"max ejection 101%", policy("    outlierDetection: {maxEjectionPercent: 101}\n"), "spec.trafficPolicy.outlierDetection.maxEjectionPercent", ErrInvalid},
		{"min health -1%", policy("    outlierDetection: {minHealthPercent: -1}\n"), "spec.trafficPolicy.outlierDetection.minHealthPercent", ErrInvalid},
		{"local origin without split", policy("    outlierDetection: {consecutiveLocalOriginFailures: 3}\n"), "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", ErrInvalid},
		{"http error codes", policy("    outlierDetection: {outlierDetectionHttpErrorCodes: [503]}\n"), "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes", ErrUnsupported},
		{"tls SIMPLE origination", policy("    tls: {mode: SIMPLE}\n"), "spec.trafficPolicy.tls.mode", ErrUnsupported},
		{"tls ISTIO_MUTUAL with sni", policy("    tls: {mode: ISTIO_MUTUAL, sni: a.b}\n"), "spec.trafficPolicy.tls.sni", ErrUnsupported},
		{"port level without port", policy("    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n"), "spec.trafficPolicy.portLevelSettings[0].port", ErrInvalid},
		{"port level port 0", policy("    portLevelSettings:\n    - port: {number: 0}\n      loadBalancer: {simple: RANDOM}\n"), "spec.trafficPolicy.portLevelSettings[0].port.number", ErrInvalid},
		{"port level empty", policy("    portLevelSettings:\n    - port: {number: 80}\n"), "spec.trafficPolicy.portLevelSettings[0]", ErrInvalid},
		{"port level duplicate", policy("    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n"), "spec.trafficPolicy.portLevelSettings[1].port.number", ErrInvalid},
		{"port level unsupported balancer", policy("    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: PASSTHROUGH}\n"), "spec.trafficPolicy.portLevelSettings[0].loadBalancer.simple", ErrUnsupported},
		{"tunnel", policy("    tunnel: {targetHost: a.b, targetPort: 80}\n"), "spec.trafficPolicy.tunnel", ErrUnsupported},
		{"proxy protocol", policy("    proxyProtocol: {version: V2}\n"), "spec.trafficPolicy.proxyProtocol", ErrUnsupported},
		{"subset without name", drHost + "  subsets:\n  - labels: {version: v1}\n", "spec.subsets[0].name", ErrInvalid},
		{"subset bad name", drHost + "  subsets:\n  - name: V1\n", "spec.subsets[0].name", ErrInvalid},
		{"subset duplicate", drHost + "  subsets:\n  - name: v1\n  - name: v1\n", "spec.subsets[1].name", ErrInvalid},
		{"subset bad labels", drHost + "  subsets:\n  - name: v1\n    labels: {version: 'v 1'}\n", "spec.subsets[0].labels.version", ErrInvalid},
		{"subset policy problem", drHost + "  subsets:\n  - name: v1\n    trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n", "spec.subsets[0].trafficPolicy.loadBalancer.simple", ErrUnsupported},
		{"workload selector", drHost + "  workloadSelector: {matchLabels: {app: a}}\n", "spec.workloadSelector", ErrUnsupported},
	}
}

func TestValidateDestinationRule(t *testing.T) {
	runValidation(t, "DestinationRule", casesDestinationRule())
}

const sePorts = "  hosts: [api.example.com]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n"

// casesServiceEntry are the ServiceEntry rows, shared with FuzzParse.
func casesServiceEntry() []validationCase {
	return []validationCase{
		{"valid static", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, ports: {tls: 8443}}]\n", "", nil},
		{"valid static without endpoints", sePorts + "  resolution: STATIC\n", "", nil},
		{"valid dns with host name endpoint", sePorts + "  resolution: DNS\n  endpoints: [{address: backend.example.com}]\n", "", nil},
		{"valid dns without endpoints", sePorts + "  resolution: DNS\n", "", nil},
		{"valid workload selector", sePorts + "  resolution: STATIC\n  workloadSelector: {labels: {app: api}}\n", "", nil},
		{"valid exportTo none", sePorts + "  resolution: STATIC\n  exportTo: ['~']\n", "", nil},
		{"valid exportTo .", sePorts + "  resolution: STATIC\n  exportTo: ['.']\n", "", nil},
		{"valid exportTo *", sePorts + "  resolution: STATIC\n  exportTo: ['*']\n", "", nil},
		{"valid exportTo namespaces", sePorts + "  resolution: STATIC\n  exportTo: ['.', istio-system]\n", "", nil},
		{"valid endpoint serviceAccount", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, serviceAccount: api}]\n", "", nil},
		{"valid CIDR with static", sePorts + "  resolution: STATIC\n  addresses: [10.0.0.0/24]\n", "", nil},
		{"valid several hosts on TLS", "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: STATIC\n", "", nil},

		{"no hosts", "  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: STATIC\n", "spec.hosts", ErrInvalid},
		{"catch-all host", "  hosts: ['*']\n  resolution: STATIC\n", "spec.hosts[0]", ErrInvalid},
		{"bad address", sePorts + "  resolution: STATIC\n  addresses: [nope]\n", "spec.addresses[0]", ErrInvalid},
		{"CIDR with DNS", sePorts + "  resolution: DNS\n  addresses: [10.0.0.0/24]\n", "spec.addresses[0]", ErrInvalid},
		{"port 0", "  hosts: [a.b]\n  ports: [{number: 0, name: tls, protocol: TLS}]\n  resolution: STATIC\n", "spec.ports[0].number", ErrInvalid},
		{"port without name", "  hosts: [a.b]\n  ports: [{number: 1, protocol: TLS}]\n  resolution: STATIC\n", "spec.ports[0].name", ErrInvalid},
		{"port bad name", "  hosts: [a.b]\n  ports: [{number: 1, name: Tls, protocol: TLS}]\n  resolution: STATIC\n", "spec.ports[0].name", ErrInvalid},
		{"port duplicate name", "  hosts: [a.b]\n  ports: [{number: 1, name: t, protocol: TLS}, {number: 2, name: t, protocol: TLS}]\n  resolution: STATIC\n", "spec.ports[1].name", ErrInvalid},
		{"port duplicate number", "  hosts: [a.b]\n  ports: [{number: 1, name: a, protocol: TLS}, {number: 1, name: b, protocol: TLS}]\n  resolution: STATIC\n", "spec.ports[1].number", ErrInvalid},
		{"port bad protocol", "  hosts: [a.b]\n  ports: [{number: 1, name: a, protocol: QUIC}]\n  resolution: STATIC\n", "spec.ports[0].protocol", ErrInvalid},
		{"target port 70000", "  hosts: [a.b]\n  ports: [{number: 1, name: a, protocol: TLS, targetPort: 70000}]\n  resolution: STATIC\n", "spec.ports[0].targetPort", ErrInvalid},
		{"resolution unset (NONE)", sePorts, "spec.resolution", ErrUnsupported},
		{"resolution NONE", sePorts + "  resolution: NONE\n", "spec.resolution", ErrUnsupported},
		{"resolution DNS_ROUND_ROBIN", sePorts + "  resolution: DNS_ROUND_ROBIN\n", "spec.resolution", ErrUnsupported},
		{"resolution DYNAMIC_DNS", sePorts + "  resolution: DYNAMIC_DNS\n", "spec.resolution", ErrUnsupported},
		{"selector and endpoints", sePorts + "  resolution: STATIC\n  workloadSelector: {labels: {app: a}}\n  endpoints: [{address: 10.0.0.1}]\n", "spec.workloadSelector", ErrInvalid},
		{"wildcard in selector", sePorts + "  resolution: STATIC\n  workloadSelector: {labels: {app: 'a*'}}\n", "spec.workloadSelector.labels.app", ErrInvalid},
		{"static endpoint host name", sePorts + "  resolution: STATIC\n  endpoints: [{address: backend.example.com}]\n", "spec.endpoints[0].address", ErrInvalid},
		{"endpoint without address", sePorts + "  resolution: STATIC\n  endpoints: [{labels: {a: b}}]\n", "spec.endpoints[0].address", ErrInvalid},
		{"dns endpoint garbage", sePorts + "  resolution: DNS\n  endpoints: [{address: 'not an address'}]\n", "spec.endpoints[0].address", ErrInvalid},
		{"unix endpoint", sePorts + "  resolution: STATIC\n  endpoints: [{address: 'unix:///run/a.sock'}]\n", "spec.endpoints[0].address", ErrUnsupported},
		{"endpoint port not in service", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, ports: {https: 8443}}]\n", "spec.endpoints[0].ports.https", ErrInvalid},
		{"endpoint port 0", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, ports: {tls: 0}}]\n", "spec.endpoints[0].ports.tls", ErrInvalid},
		{"endpoint bad network", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, network: 'net a'}]\n", "spec.endpoints[0].network", ErrInvalid},
		{"dns wildcard host without endpoints", "  hosts: ['*.example.com']\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS\n", "spec.hosts[0]", ErrInvalid},
		{"subjectAltNames", sePorts + "  resolution: STATIC\n  subjectAltNames: ['spiffe://cluster.local/ns/a/sa/b']\n", "spec.subjectAltNames", ErrUnsupported},
		{"endpoint locality", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, locality: eu-west/zone-a}]\n", "spec.endpoints[0].locality", ErrUnsupported},
		{"endpoint bad serviceAccount", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, serviceAccount: 'A B'}]\n", "spec.endpoints[0].serviceAccount", ErrInvalid},
		{"exportTo ~ with others", sePorts + "  resolution: STATIC\n  exportTo: ['~', '.']\n", "spec.exportTo", ErrInvalid},
		{"exportTo bad namespace", sePorts + "  resolution: STATIC\n  exportTo: ['a/b']\n", "spec.exportTo[0]", ErrInvalid},
		{"several hosts on a TCP port", "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: STATIC\n", "spec.hosts", ErrInvalid},
	}
}

func TestValidateServiceEntry(t *testing.T) {
	runValidation(t, "ServiceEntry", casesServiceEntry())
}

// casesWorkloadEntry are the WorkloadEntry rows, shared with FuzzParse.
func casesWorkloadEntry() []validationCase {
	return []validationCase{
		{"valid IP", "  address: 10.0.0.1\n", "", nil},
		{"valid IPv6", "  address: 'fd00::1'\n", "", nil},
		{"valid host name", "  address: vm-1.example.com\n  ports: {http: 8080}\n  serviceAccount: reviews\n  network: net-a\n  weight: 3\n", "", nil},

		{"no address", "  labels: {app: a}\n", "spec.address", ErrInvalid},
		{"bad address", "  address: 'not an address!'\n", "spec.address", ErrInvalid},
		{"IPv6 with zone", "  address: 'fe80::1%eth0'\n", "spec.address", ErrInvalid},
		{"unix address", "  address: 'unix:///run/a.sock'\n", "spec.address", ErrUnsupported},
		{"bad port name", "  address: 10.0.0.1\n  ports: {Http: 80}\n", "spec.ports.Http", ErrInvalid},
		{"port 0", "  address: 10.0.0.1\n  ports: {http: 0}\n", "spec.ports.http", ErrInvalid},
		{"port 70000", "  address: 10.0.0.1\n  ports: {http: 70000}\n", "spec.ports.http", ErrInvalid},
		{"bad label", "  address: 10.0.0.1\n  labels: {app: 'x y'}\n", "spec.labels.app", ErrInvalid},
		{"bad network", "  address: 10.0.0.1\n  network: '-net'\n", "spec.network", ErrInvalid},
		{"bad service account", "  address: 10.0.0.1\n  serviceAccount: 'Bad SA'\n", "spec.serviceAccount", ErrInvalid},
		{"locality", "  address: 10.0.0.1\n  locality: us-east/zone-1\n", "spec.locality", ErrUnsupported},
		{"locality with spaces", "  address: 10.0.0.1\n  locality: 'eu west'\n", "spec.locality", ErrInvalid},
		{"negative weight", "  address: 10.0.0.1\n  weight: -1\n", "spec.weight", ErrInvalid},
	}
}

func TestValidateWorkloadEntry(t *testing.T) {
	runValidation(t, "WorkloadEntry", casesWorkloadEntry())
}

// TestRefusedFieldMessages checks that each field meshgate refuses rather
// than ignores is refused with a message naming the file, the resource
// and the field, and saying why.
func TestRefusedFieldMessages(t *testing.T) {
	for _, tc := range []struct {
		kind, spec, want string
	}{
		{"VirtualService", tlsRoute("sniHosts: [a.example.com]\n      destinationSubnets: [10.0.0.0/8]", oneDest),
			"f.yaml: document 1 (VirtualService default/r): spec.tls[0].match[0].destinationSubnets: destinationSubnets is not supported yet"},
		{"VirtualService", vsHead + "  tcp:\n  - match:\n    - sourceSubnet: 192.0.2.0/24\n    route:\n" + oneDest,
			"f.yaml: document 1 (VirtualService default/r): spec.tcp[0].match[0].sourceSubnet: sourceSubnet is not supported yet"},
		{"ServiceEntry", sePorts + "  resolution: STATIC\n  subjectAltNames: [a]\n",
			"f.yaml: document 1 (ServiceEntry default/r): spec.subjectAltNames: subjectAltNames is not supported: meshgate passes TLS through"},
		{"ServiceEntry", sePorts + "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, locality: a/b}]\n",
			"f.yaml: document 1 (ServiceEntry default/r): spec.endpoints[0].locality: locality is not supported yet"},
		{"WorkloadEntry", "  address: 10.0.0.1\n  locality: a/b\n",
			"f.yaml: document 1 (WorkloadEntry default/r): spec.locality: locality is not supported yet"},
		{"DestinationRule", policy("    connectionPool: {tcp: {tcpKeepalive: {probes: 500}}}\n"),
			"f.yaml: document 1 (DestinationRule default/r): spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes: probes 500 must be at most 127"},
	} {
		_, err := Parse("f.yaml", []byte(doc(tc.kind, "r", tc.spec)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) error = %v\nwant it to contain %q", tc.kind, err, tc.want)
		}
	}
}

func TestServerNamesUniqueAcrossGateways(t *testing.T) {
	gw := func(name string) string {
		return doc("Gateway", name, "  servers:\n  - name: shared\n    port: {number: 1, name: t, protocol: TCP}\n    hosts: ['*']\n")
	}
	e := wantProblem(t, gw("a")+"---\n"+gw("b"), "spec.servers[0].name", ErrInvalid)
	if e.Index != 2 || e.Name != "default/b" {
		t.Errorf("problem = %v, want it on Gateway default/b (document 2)", e)
	}
}

func TestErrorsUnwrap(t *testing.T) {
	es := Errors{
		{Field: "a", Msg: "x", Err: ErrInvalid},
		{Field: "b", Msg: "y", Err: ErrUnsupported},
	}
	var err error = es
	if !errors.Is(err, ErrUnsupported) || !errors.Is(err, ErrInvalid) || errors.Is(err, ErrDuplicate) {
		t.Errorf("errors.Is on Errors{invalid, unsupported} = wrong; want invalid and unsupported only")
	}
	var e *Error
	if !errors.As(err, &e) || e.Field != "a" {
		t.Errorf("errors.As(Errors, *Error) = %v, want the first problem", e)
	}
	if got := es.Error(); got != "config: a: x\nconfig: b: y" {
		t.Errorf("Errors.Error() = %q, want one line per problem", got)
	}
}
