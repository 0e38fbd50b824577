package cluster

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadKeyringFile(t *testing.T) {
	k16 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	k32 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	for _, tc := range []struct {
		name    string
		in      string
		want    int    // keys read
		wantErr string // substring of the error; "" = success
	}{
		{name: "one key", in: k32 + "\n", want: 1},
		{name: "comments and blanks", in: "# primary\n\n" + k32 + "\n  " + k16 + "  \n", want: 2},
		{name: "empty file", in: "", want: 0},
		{name: "not base64", in: "not-a-key!\n", wantErr: "line 1"},
		{name: "wrong length", in: k32 + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 20)) + "\n", wantErr: "line 2"},
		{name: "url alphabet", in: strings.ReplaceAll(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\xfb", 32))), "+", "-"), wantErr: "line 1"},
		{name: "binary garbage", in: "\x00\xff\xfe", wantErr: "line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keyring")
			if err := os.WriteFile(p, []byte(tc.in), 0o600); err != nil {
				t.Fatal(err)
			}
			keys, err := ReadKeyringFile(p)
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("ReadKeyringFile(%q) error = %v, want one naming %q", tc.in, err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ReadKeyringFile(%q) error = %v, want %d keys", tc.in, err, tc.want)
			case tc.wantErr == "" && len(keys) != tc.want:
				t.Fatalf("ReadKeyringFile(%q) = %d keys, want %d", tc.in, len(keys), tc.want)
			}
		})
	}
	if _, err := ReadKeyringFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("ReadKeyringFile(missing file) succeeded, want an error")
	}
}

func FuzzReadKeyringFile(f *testing.F) {
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n# c\n")
	f.Add("x\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		p := filepath.Join(t.TempDir(), "keyring")
		if err := os.WriteFile(p, []byte(in), 0o600); err != nil {
			t.Fatal(err)
		}
		keys, err := ReadKeyringFile(p)
		if err != nil {
			return
		}
		for _, k := range keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				t.Fatalf("readKeyring accepted a %d-byte key from %q", n, in)
			}
		}
	})
}
