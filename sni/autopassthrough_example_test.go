package sni_test

import (
	"errors"
	"fmt"

	"github.com/meshgate/meshgate/sni"
)

func ExampleParseAutoPassthrough() {
	ap, err := sni.ParseAutoPassthrough("outbound_.9080_.v1_.reviews.default.svc.cluster.local")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ap.Host, ap.Port, ap.Subset)
	fmt.Println(ap.ClusterName())

	// The whole service, no subset: the subset field is empty.
	ap, _ = sni.ParseAutoPassthrough("outbound|9080||reviews.default.svc.cluster.local")
	fmt.Println(ap)

	// An ordinary host name is not an AUTO_PASSTHROUGH name.
	_, err = sni.ParseAutoPassthrough("reviews.default.svc.cluster.local")
	fmt.Println(errors.Is(err, sni.ErrNotAutoPassthrough))

	// A bad part is named.
	_, err = sni.ParseAutoPassthrough("outbound_.080_.v1_.reviews.default.svc.cluster.local")
	var ae *sni.AutoPassthroughError
	fmt.Println(errors.As(err, &ae), ae.Part)
	// Output:
	// reviews.default.svc.cluster.local 9080 v1
	// outbound|9080|v1|reviews.default.svc.cluster.local
	// outbound_.9080_._.reviews.default.svc.cluster.local
	// true
	// true port
}
