package config_test

import (
	"errors"
	"fmt"

	"github.com/meshgate/meshgate/config"
)

func ExampleParse() {
	set, err := config.Parse("gw.yaml", []byte(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network-gateway
  namespace: istio-system
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	gw := set.Gateway("istio-system", "cross-network-gateway")
	fmt.Println(gw.Spec.GetServers()[0].GetTls().GetMode(), set.Kinds()[config.KindGateway])
	// Output: AUTO_PASSTHROUGH 1
}

func ExampleParse_errors() {
	_, err := config.Parse("resources/gw.yaml", []byte(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: eastwest}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE}
    hosts: ["*.example.com"]
`))
	fmt.Println(err)
	fmt.Println(errors.Is(err, config.ErrUnsupported))
	// Output:
	// resources/gw.yaml: document 1 (Gateway default/eastwest): spec.servers[0].tls.mode: mode SIMPLE is not supported yet (supported: PASSTHROUGH, AUTO_PASSTHROUGH, ISTIO_MUTUAL)
	// true
}
