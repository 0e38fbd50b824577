package catalog

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
)

// maxCheckBody bounds what an HTTP check reads of an answer's body before
// closing the connection.
const maxCheckBody = 4 << 10

// probe runs one check against addr: a TCP dial when path is "", or an
// HTTP/1.1 GET of path otherwise. The connection always goes to addr,
// whatever the request says: the dialer ignores the URL's host, redirects
// are not followed and no proxy is used.
func probe(ctx context.Context, addr, path string) error {
	var d net.Dialer
	if path == "" {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 16 << 10,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("check request: %w", err)
	}
	req.Header.Set("User-Agent", "meshgate-check")
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxCheckBody))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP check GET %s: status %d, want 2xx", path, resp.StatusCode)
	}
	return nil
}
