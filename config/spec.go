package config

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// This file checks a decoded spec against the Istio protobuf schema before
// protojson sees it, so that every unknown field and wrong type is
// reported with its full path ("spec.servers[0].port.number") rather than
// protojson's first error at a byte offset. It also rewrites durations
// into protojson's form: Istio reads durations with Go's
// time.ParseDuration ("5m", "1h30m", "100ms"), protojson only "300s".

// checkMessage checks obj against the message md; it may rewrite values in
// obj (durations) in place. A value that is wrong is removed (a list item
// is replaced by an empty value, so later indexes keep their meaning), so
// that the rest of the spec can still be decoded and validated.
func checkMessage(c *collector, field string, obj map[string]any, md protoreflect.MessageDescriptor) {
	fields := md.Fields()
	oneofs := map[protoreflect.FullName]string{}
	for _, k := range sortedKeys(obj) {
		if c.full() {
			return
		}
		v := obj[k]
		path := field + "." + k
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByTextName(k)
		}
		if fd == nil {
			c.invalid(path, "unknown field %q%s", k, suggest(k, fields))
			delete(obj, k)
			continue
		}
		if v == nil {
			continue // null leaves the field unset, as protojson does
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if prev, ok := oneofs[od.FullName()]; ok {
				c.invalid(path, "only one of %q and %q may be set", prev, k)
				delete(obj, k)
				continue
			}
			oneofs[od.FullName()] = k
		}
		switch {
		case fd.IsList():
			list, ok := v.([]any)
			if !ok {
				c.invalid(path, "expected a list, got %s", describe(v))
				delete(obj, k)
				continue
			}
			for i, e := range list {
				ep := fieldIndex(path, i)
				if e == nil {
					c.invalid(ep, "list items must not be null")
					list[i] = emptyValue(fd)
					continue
				}
				nv, ok := checkValue(c, ep, e, fd)
				if !ok {
					nv = emptyValue(fd)
				}
				list[i] = nv
			}
		case fd.IsMap():
			m, ok := v.(map[string]any)
			if !ok {
				c.invalid(path, "expected a map, got %s", describe(v))
				delete(obj, k)
				continue
			}
			kd, vd := fd.MapKey(), fd.MapValue()
			for _, mk := range sortedKeys(m) {
				ep := mapField(path, mk)
				if msg := checkMapKey(mk, kd.Kind()); msg != "" {
					c.invalid(ep, "%s", msg)
					delete(m, mk)
					continue
				}
				if m[mk] == nil {
					c.invalid(ep, "map values must not be null")
					delete(m, mk)
					continue
				}
				nv, ok := checkValue(c, ep, m[mk], vd)
				if !ok {
					delete(m, mk)
					continue
				}
				m[mk] = nv
			}
		default:
			nv, ok := checkValue(c, path, v, fd)
			if !ok {
				delete(obj, k)
				continue
			}
			obj[k] = nv
		}
	}
}

// emptyValue stands in for a bad list item: an empty message, or the
// zero value of a scalar, in JSON form.
func emptyValue(fd protoreflect.FieldDescriptor) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
			return nil
		}
		return map[string]any{}
	case protoreflect.StringKind, protoreflect.BytesKind:
		return ""
	case protoreflect.BoolKind:
		return false
	case protoreflect.EnumKind:
		return json.Number("0")
	default:
		return json.Number("0")
	}
}

// suggest offers the field name that differs only in case, or in using
// the proto name, so "snihosts" or "sni_host" get a hint.
func suggest(k string, fields protoreflect.FieldDescriptors) string {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	nk := norm(k)
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if norm(fd.JSONName()) == nk || strings.TrimSuffix(norm(fd.JSONName()), "s") == strings.TrimSuffix(nk, "s") {
			return " (did you mean " + strconv.Quote(fd.JSONName()) + "?)"
		}
	}
	return ""
}

func checkMapKey(k string, kind protoreflect.Kind) string {
	switch kind {
	case protoreflect.StringKind:
		return ""
	case protoreflect.BoolKind:
		if k != "true" && k != "false" {
			return "map key must be true or false"
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if _, err := strconv.ParseInt(k, 10, 32); err != nil {
			return "map key must be a 32-bit integer"
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if _, err := strconv.ParseInt(k, 10, 64); err != nil {
			return "map key must be a 64-bit integer"
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if _, err := strconv.ParseUint(k, 10, 32); err != nil {
			return "map key must be an unsigned 32-bit integer"
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if _, err := strconv.ParseUint(k, 10, 64); err != nil {
			return "map key must be an unsigned 64-bit integer"
		}
	}
	return ""
}

// checkValue checks one non-null value of field fd (a list item, map value
// or singular field) and returns it, possibly rewritten.
//
// ok is false when v itself is wrong (problems deeper inside a message
// value are reported and removed there).
func checkValue(c *collector, path string, v any, fd protoreflect.FieldDescriptor) (any, bool) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkMessageValue(c, path, v, fd.Message())
	case protoreflect.EnumKind:
		return v, checkEnum(c, path, v, fd.Enum())
	default:
		return v, checkScalar(c, path, v, fd.Kind())
	}
}

func checkMessageValue(c *collector, path string, v any, md protoreflect.MessageDescriptor) (any, bool) {
	switch name := md.FullName(); name {
	case "google.protobuf.Duration":
		s, ok := v.(string)
		if !ok {
			c.invalid(path, "expected a duration such as \"5s\", \"100ms\" or \"1m30s\", got %s", describe(v))
			return v, false
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			c.invalid(path, "%q is not a duration (write it like \"5s\", \"100ms\" or \"1m30s\")", s)
			return v, false
		}
		return protoDuration(d), true
	case "google.protobuf.Timestamp", "google.protobuf.FieldMask":
		if _, ok := v.(string); !ok {
			c.invalid(path, "expected a string, got %s", describe(v))
			return v, false
		}
		return v, true
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
		"google.protobuf.Any", "google.protobuf.Empty":
		return v, true // free-form; protojson checks it
	default:
		if strings.HasPrefix(string(name), "google.protobuf.") && strings.HasSuffix(string(name), "Value") {
			// Wrapper types (UInt32Value, BoolValue...) are written as
			// their bare value.
			if vf := md.Fields().ByName("value"); vf != nil {
				return checkValue(c, path, v, vf)
			}
		}
		obj, ok := v.(map[string]any)
		if !ok {
			c.invalid(path, "expected a map, got %s", describe(v))
			return v, false
		}
		checkMessage(c, path, obj, md)
		return obj, true
	}
}

// protoDuration renders d the way protojson reads it: seconds with up to
// nine fractional digits and an "s" suffix.
func protoDuration(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign = "-"
		if d == math.MinInt64 {
			return "-9223372036.854775808s"
		}
		d = -d
	}
	sec, nanos := int64(d/time.Second), int64(d%time.Second)
	if nanos == 0 {
		return sign + strconv.FormatInt(sec, 10) + "s"
	}
	frac := strings.TrimRight(strconv.FormatInt(1_000_000_000+nanos, 10)[1:], "0")
	return sign + strconv.FormatInt(sec, 10) + "." + frac + "s"
}

func checkEnum(c *collector, path string, v any, ed protoreflect.EnumDescriptor) bool {
	if ed.FullName() == "google.protobuf.NullValue" {
		return true
	}
	values := ed.Values()
	switch t := v.(type) {
	case string:
		if values.ByName(protoreflect.Name(t)) != nil {
			return true
		}
		hint := ""
		if values.ByName(protoreflect.Name(strings.ToUpper(t))) != nil {
			hint = " (enum values are upper case)"
		}
		c.invalid(path, "%q is not one of %s%s", t, enumNames(ed), hint)
	case json.Number:
		n, err := strconv.ParseInt(string(t), 10, 32)
		if err == nil && values.ByNumber(protoreflect.EnumNumber(n)) != nil {
			return true
		}
		c.invalid(path, "%s is not one of %s", t, enumNames(ed))
	default:
		c.invalid(path, "expected one of %s, got %s%s", enumNames(ed), describe(v), quoteHint(v))
	}
	return false
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	names := make([]string, 0, vals.Len())
	for i := 0; i < vals.Len(); i++ {
		names = append(names, string(vals.Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func checkScalar(c *collector, path string, v any, kind protoreflect.Kind) bool {
	switch kind {
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			c.invalid(path, "expected true or false, got %s", describe(v))
			return false
		}
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			c.invalid(path, "expected a string, got %s%s", describe(v), quoteHint(v))
			return false
		}
	case protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			c.invalid(path, "expected a base64 string, got %s", describe(v))
			return false
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		switch t := v.(type) {
		case json.Number:
		case string:
			if _, err := strconv.ParseFloat(t, 64); err != nil && t != "NaN" && t != "Infinity" && t != "-Infinity" {
				c.invalid(path, "expected a number, got %q", t)
				return false
			}
		default:
			c.invalid(path, "expected a number, got %s", describe(v))
			return false
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return checkInt(c, path, v, math.MinInt32, math.MaxInt32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return checkInt(c, path, v, math.MinInt64, math.MaxInt64)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return checkInt(c, path, v, 0, math.MaxUint32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return checkUint64(c, path, v)
	}
	return true
}

// intText returns the text of an integer given as a JSON number or a
// numeric string (protojson accepts both), or "" with a message.
func intText(v any) (string, string) {
	switch t := v.(type) {
	case json.Number:
		return string(t), ""
	case string:
		return t, ""
	}
	return "", "expected an integer, got " + describe(v)
}

// integral parses s as an integer, also accepting an exponent form with an
// integral value ("1e3"), as protojson does.
func integral(s string) (int64, bool, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) {
		return 0, false, false
	}
	if f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, true, false // integral, but out of int64 range
	}
	return int64(f), true, true
}

func checkInt(c *collector, path string, v any, lo, hi int64) bool {
	s, msg := intText(v)
	if msg != "" {
		c.invalid(path, "%s%s", msg, numberHint(v))
		return false
	}
	n, isInt, inRange := integral(s)
	switch {
	case !isInt:
		c.invalid(path, "%q is not an integer", s)
	case !inRange || n < lo || n > hi:
		c.invalid(path, "%s is out of range (%d to %d)", s, lo, hi)
	default:
		return true
	}
	return false
}

func checkUint64(c *collector, path string, v any) bool {
	s, msg := intText(v)
	if msg != "" {
		c.invalid(path, "%s", msg)
		return false
	}
	if _, err := strconv.ParseUint(s, 10, 64); err == nil {
		return true
	}
	n, isInt, inRange := integral(s)
	switch {
	case !isInt:
		c.invalid(path, "%q is not an integer", s)
	case !inRange || n < 0:
		c.invalid(path, "%s is out of range (0 to %d)", s, uint64(math.MaxUint64))
	default:
		return true
	}
	return false
}

func numberHint(v any) string {
	if _, ok := v.(bool); ok {
		return " (YAML reads y/n/yes/no/on/off as booleans)"
	}
	return ""
}
