package pki

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// marshalAudit encodes a batch of audit records exactly as json.Marshal
// does (same fields, order, omissions and escaping, including the HTML
// escapes), without reflection: the audit writer encodes every record
// it commits. Records whose times json.Marshal cannot encode (years
// outside 0-9999) go through json.Marshal, which reports the error.
func marshalAudit(recs []AuditRecord) ([]byte, error) {
	n := 2
	for i := range recs {
		r := &recs[i]
		if !jsonTimeOK(r.Time) || !jsonTimeOK(r.NotAfter) {
			return json.Marshal(recs)
		}
		n += 200 + len(r.Node) + len(r.Detail) + len(r.Serial) + len(r.Identity) + len(r.Caller) + len(r.Remote)
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAuditRecord(b, &recs[i])
	}
	return append(b, ']'), nil
}

func jsonTimeOK(t time.Time) bool {
	y := t.Year()
	return y >= 0 && y <= 9999
}

func appendAuditRecord(b []byte, r *AuditRecord) []byte {
	b = append(b, `{"time":`...)
	b = appendJSONTime(b, r.Time)
	b = append(b, `,"node":`...)
	b = appendJSONString(b, r.Node)
	b = append(b, `,"outcome":`...)
	b = appendJSONString(b, r.Outcome)
	for _, f := range [...]struct{ name, v string }{
		{`,"reason":`, string(r.Reason)},
		{`,"detail":`, r.Detail},
		{`,"serial":`, r.Serial},
		{`,"identity":`, r.Identity},
		{`,"caller":`, r.Caller},
		{`,"remote":`, r.Remote},
	} {
		if f.v != "" {
			b = append(b, f.name...)
			b = appendJSONString(b, f.v)
		}
	}
	if !r.NotAfter.IsZero() {
		b = append(b, `,"notAfter":`...)
		b = appendJSONTime(b, r.NotAfter)
	}
	if r.TokenUse != 0 {
		b = append(b, `,"tokenUse":`...)
		b = strconv.AppendInt(b, int64(r.TokenUse), 10)
	}
	return append(b, '}')
}

// appendJSONTime appends t as time.Time.MarshalJSON does (RFC 3339 with
// nanoseconds, quoted); the caller has checked the year.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string the way encoding/json
// writes it: quote, backslash and control characters escaped (\b \f \n \r
// \t by name, the rest as \u00XX), <, > and & as \u003c \u003e \u0026,
// invalid UTF-8 as \ufffd, and U+2028, U+2029 as \u2028, \u2029.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
