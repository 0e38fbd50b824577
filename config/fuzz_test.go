package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// addFiles seeds f with every file matching pattern.
func addFiles(f *testing.F, pattern string) {
	f.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		f.Fatalf("Glob(%s) = %v, %v; want seed files", pattern, files, err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

// checkRefusal asserts the shape every refusal must have.
func checkRefusal(t *testing.T, call string, err error) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("%s error = %T %v, want a non-empty Errors", call, err, err)
	}
	for _, e := range es {
		if e == nil || e.Err == nil || e.Msg == "" {
			t.Fatalf("%s returned a malformed problem %#v", call, e)
		}
	}
}

func FuzzParse(f *testing.F) {
	addFiles(f, "testdata/valid/*.yaml")
	addFiles(f, "testdata/invalid/*.yaml")
	for _, tc := range hostileParseCases() {
		if len(tc.in) < 64<<10 { // the multi-megabyte rows slow every run down
			f.Add([]byte(tc.in))
		}
	}
	for kind, cases := range map[string][]validationCase{
		"Gateway": casesGateway(), "VirtualService": casesVirtualService(), "DestinationRule": casesDestinationRule(),
		"ServiceEntry": casesServiceEntry(), "WorkloadEntry": casesWorkloadEntry(),
	} {
		for _, tc := range cases {
			f.Add([]byte(doc(kind, "r", tc.spec)))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Parse("fuzz.yaml", data)
		if err != nil {
			if set != nil {
				t.Fatalf("Parse returned a Set and an error %v; a bad input must be refused whole", err)
			}
			checkRefusal(t, "Parse", err)
			return
		}
		if err := set.Validate(); err != nil {
			t.Fatalf("Parse accepted input that Validate refuses:\n%v\ninput:\n%s", err, data)
		}
		y, err := set.YAML()
		if err != nil {
			t.Fatalf("YAML() of an accepted Set: %v", err)
		}
		back, err := Parse("roundtrip.yaml", y)
		if err != nil {
			t.Fatalf("Parse(YAML()) refused the rendering of an accepted Set:\n%v\ninput:\n%s\nYAML:\n%s", err, data, y)
		}
		if back.Hash() != set.Hash() {
			t.Fatalf("round trip changed the Set\ninput:\n%s\nYAML:\n%s", data, y)
		}
	})
}

func FuzzParseNode(f *testing.F) {
	addFiles(f, "testdata/node/*.yaml")
	for _, tc := range hostileNodeCases() {
		if len(tc.in) < 64<<10 {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseNode("node.yaml", data)
		if err != nil {
			if n != nil {
				t.Fatalf("ParseNode returned a Node and an error %v", err)
			}
			checkRefusal(t, "ParseNode", err)
			return
		}
		if err := n.Validate(); err != nil {
			t.Fatalf("ParseNode accepted settings that Validate refuses: %v", err)
		}
		if !bytes.Contains(data, []byte("{{")) { // templates would be rendered against this host
			dns, ips, err := n.CAServerNames()
			if err != nil {
				t.Fatalf("CAServerNames of accepted settings: %v", err)
			}
			for _, d := range dns {
				if !slices.Contains(n.CA.ServerNames, d) || checkServerName(d) != "" {
					t.Fatalf("CAServerNames gave DNS name %q, not a valid ca.server_names entry %q", d, n.CA.ServerNames)
				}
			}
			for _, ip := range ips {
				if ip.IsUnspecified() {
					t.Fatalf("CAServerNames gave the unspecified address %v", ip)
				}
			}
		}
		js, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseNode("roundtrip.yaml", y)
		if err != nil {
			t.Fatalf("ParseNode(rendering of accepted settings) = %v\ninput:\n%s\nYAML:\n%s", err, data, y)
		}
		js2, _ := json.Marshal(back)
		if string(js) != string(js2) {
			t.Fatalf("node settings changed in a round trip:\n%s\n%s", js, js2)
		}
	})
}
