// Command meshgate is the meshgate gateway node and its CLI.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		if err != errSilent {
			fmt.Fprintln(os.Stderr, "meshgate:", err)
		}
		os.Exit(1)
	}
}
