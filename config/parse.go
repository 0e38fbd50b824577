package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	yamlv2 "go.yaml.in/yaml/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// Input limits. Parse and Load refuse input beyond them with an error that
// wraps ErrTooLarge.
const (
	// MaxFileBytes is the largest file (or Parse input) accepted: 8 MiB.
	MaxFileBytes = 8 << 20
	// MaxDocuments is the largest number of YAML documents in one file.
	MaxDocuments = 10000
	// MaxDepth is the deepest nesting of maps and lists accepted in one
	// document. Istio's resources need fewer than 15 levels.
	MaxDepth = 64
	// MaxExpandedBytes bounds what one file may grow to once YAML aliases
	// are expanded (a "billion laughs" file is tiny but expands without
	// limit). Each scalar counts its length, each node at least 8 bytes.
	MaxExpandedBytes = 4 * MaxFileBytes
)

// APIVersions are the apiVersion values accepted for every kind (the
// three versions of networking.istio.io share one schema); YAML writes the
// first. Callers must not modify it.
var APIVersions = []string{
	"networking.istio.io/v1",
	"networking.istio.io/v1beta1",
	"networking.istio.io/v1alpha3",
}

// Kinds lists the kinds meshgate reads, in the order YAML output uses.
// Callers must not modify it.
var Kinds = []Kind{KindGateway, KindVirtualService, KindDestinationRule, KindServiceEntry, KindWorkloadEntry}

// otherIstioKinds are Istio kinds meshgate knows of but does not implement.
var otherIstioKinds = []string{"Sidecar", "EnvoyFilter", "WorkloadGroup", "ProxyConfig"}

// Parse reads the multi-document YAML in data (documents separated by
// "---" lines; empty documents are skipped) and returns the validated
// resources. file only labels errors and Meta.Source; it is not opened.
//
// Every problem found is reported, as an Errors value (one *Error per
// problem). If there is any problem the Set is nil: a bad input is refused
// whole. Parse is safe to call from many goroutines at once.
func Parse(file string, data []byte) (*Set, error) {
	p := newParser()
	set := &Set{}
	p.file(set, file, data)
	checkSet(set, &p.errs)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return set, nil
}

// parser holds the state of one Parse or Load call.
type parser struct {
	errs Errors
}

func newParser() *parser { return &parser{} }

// chunk is one YAML document cut out of a file.
type chunk struct {
	line int // 1-based line of the file where the chunk starts
	body []byte
}

// file parses one file's bytes into set.
func (p *parser) file(set *Set, file string, data []byte) {
	fc := collector{at: where{file: file}, errs: &p.errs}
	if len(data) > MaxFileBytes {
		fc.add(ErrTooLarge, "", "file is %d bytes; the limit is %d", len(data), MaxFileBytes)
		return
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		off := firstInvalidUTF8(data)
		fc.add(ErrSyntax, "", "not valid UTF-8 at line %d (byte offset %d)", 1+bytes.Count(data[:off], []byte("\n")), off)
		return
	}
	if bytes.IndexByte(data, 0) >= 0 {
		off := bytes.IndexByte(data, 0)
		fc.add(ErrSyntax, "", "NUL byte at line %d (byte offset %d); YAML must be text", 1+bytes.Count(data[:off], []byte("\n")), off)
		return
	}
	chunks := splitDocuments(data, MaxDocuments+1)
	if len(chunks) > MaxDocuments {
		fc.add(ErrTooLarge, "", "file has more than %d YAML documents, the limit", MaxDocuments)
		return
	}
	budget := int64(MaxExpandedBytes)
	for i, ch := range chunks {
		if fc.full() {
			return
		}
		if !p.document(set, file, i+1, ch, &budget) {
			return
		}
	}
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// splitDocuments cuts data at document markers: a line that starts with
// "---" followed by nothing, a space or a tab, and the end marker "...".
// A chunk begins just after its marker, on the marker's line, so line
// numbers inside a chunk count from the marker line. A first chunk that
// holds only comments, blank lines and directives is not a document and
// is dropped. Chunks share data's memory. Splitting stops once more than
// limit chunks are found (the caller refuses such input).
func splitDocuments(data []byte, limit int) []chunk {
	var out []chunk
	start, startLine := 0, 1
	line := 1
	for pos := 0; pos < len(data) && len(out) <= limit; line++ {
		end := bytes.IndexByte(data[pos:], '\n')
		next := len(data)
		if end >= 0 {
			next = pos + end + 1
		} else {
			end = len(data) - pos
		}
		if isDocMarker(data[pos : pos+end]) {
			out = append(out, chunk{line: startLine, body: data[start:pos]})
			start, startLine = pos+3, line
		}
		pos = next
	}
	out = append(out, chunk{line: startLine, body: data[start:]})
	if !hasContent(out[0].body) {
		out = out[1:]
	}
	return out
}

func isDocMarker(l []byte) bool {
	l = bytes.TrimSuffix(l, []byte("\r"))
	if !bytes.HasPrefix(l, []byte("---")) && !bytes.HasPrefix(l, []byte("...")) {
		return false
	}
	return len(l) == 3 || l[3] == ' ' || l[3] == '\t'
}

// hasContent reports whether b holds anything but blank lines, comments
// and directives.
func hasContent(b []byte) bool {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' || t[0] == '%' {
			continue
		}
		return true
	}
	return false
}

// document parses one chunk into set. It returns false when the rest of
// the file must not be read (a limit was hit).
func (p *parser) document(set *Set, file string, index int, ch chunk, budget *int64) bool {
	c := &collector{at: where{file: file, index: index}, errs: &p.errs}

	doc, ok, err := toJSONTree(ch, budget)
	switch {
	case err != nil && errors.Is(err, ErrTooLarge):
		c.add(ErrTooLarge, "", "%v", strings.TrimPrefix(err.Error(), ErrTooLarge.Error()+": "))
		return false
	case err != nil && isYAMLLimit(err):
		c.add(ErrTooLarge, "", "%s (YAML aliases or nesting beyond the limits)", yamlMessage(err, ch))
		return false
	case err != nil:
		c.add(ErrSyntax, "", "%s", yamlMessage(err, ch))
		return true
	case !ok:
		return true // empty document
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		c.invalid("", "a document must be a map with apiVersion, kind, metadata and spec; got %s", describe(doc))
		return true
	}
	p.resource(set, c, obj, file, index)
	return true
}

// toJSONTree converts one YAML document to a JSON tree (numbers as
// json.Number) with sigs.k8s.io/yaml, strictly (duplicate keys are
// errors). ok is false for an empty document. Errors wrapping ErrTooLarge
// mean a limit was hit.
//
// A document that may hold an alias is first decoded on its own and its
// expanded size charged against budget, because alias expansion is where a
// small file becomes a huge one. Without a '*' token no alias can exist,
// and that decode (half the cost) is skipped.
func toJSONTree(ch chunk, budget *int64) (tree any, ok bool, err error) {
	if mayHaveAlias(ch.body) {
		y, err := decodeYAML(ch.body)
		if err != nil {
			return nil, false, err
		}
		if y == nil {
			return nil, false, nil
		}
		if err := measure(y, 0, budget); err != nil {
			return nil, false, fmt.Errorf("%w: %v", ErrTooLarge, err)
		}
	}
	js, err := safeYAMLToJSON(ch.body)
	if err != nil {
		return nil, false, err
	}
	if bytes.Equal(js, []byte("null")) {
		return nil, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return nil, false, err
	}
	if err := measureJSON(tree, 0); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return tree, true, nil
}

// isYAMLLimit reports whether a YAML library error is one of its own
// limits (alias expansion, nesting) rather than a syntax error.
func isYAMLLimit(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "excessive aliasing") || strings.Contains(msg, "exceeded max depth")
}

// mayHaveAlias reports whether b has a '*' that could start a YAML alias.
// A '*' right after a letter, digit or quote cannot (it is inside a plain
// or quoted scalar, as in "*.example.com"); any other '*' is assumed to be
// one, which errs on the safe side.
func mayHaveAlias(b []byte) bool {
	for i, c := range b {
		if c != '*' {
			continue
		}
		if i == 0 {
			return true
		}
		switch p := b[i-1]; {
		case p >= 'a' && p <= 'z', p >= 'A' && p <= 'Z', p >= '0' && p <= '9', p == '"', p == '\'':
		default:
			return true
		}
	}
	return false
}

// safeYAMLToJSON is yaml.YAMLToJSONStrict with a panic in the YAML library
// turned into an error.
func safeYAMLToJSON(b []byte) (js []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			js, err = nil, fmt.Errorf("yaml: %v", r)
		}
	}()
	return yaml.YAMLToJSONStrict(b)
}

// measureJSON checks the nesting depth of a decoded JSON tree.
func measureJSON(v any, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("document is nested deeper than %d levels", MaxDepth)
	}
	switch t := v.(type) {
	case map[string]any:
		for _, e := range t {
			if err := measureJSON(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range t {
			if err := measureJSON(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeYAML decodes one document strictly (duplicate keys are errors). A
// panic inside the YAML library is turned into an error.
func decodeYAML(b []byte) (tree any, err error) {
	defer func() {
		if r := recover(); r != nil {
			tree, err = nil, fmt.Errorf("yaml: %v", r)
		}
	}()
	err = yamlv2.UnmarshalStrict(b, &tree)
	return tree, err
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// yamlMessage rewrites a YAML library error so that line numbers count
// from the start of the file, and adds a hint for tab indentation.
func yamlMessage(err error, ch chunk) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	msg = strings.Join(lines, "; ")
	tab := false
	msg = yamlLineRE.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(m[len("line "):])
		if err != nil {
			return m
		}
		if l := nthLine(ch.body, n); bytes.ContainsRune(l, '\t') {
			tab = true
		}
		return "line " + strconv.Itoa(ch.line+n-1)
	})
	if tab && strings.Contains(msg, "cannot start any token") {
		msg += " (YAML does not allow tabs for indentation)"
	}
	return msg
}

func nthLine(b []byte, n int) []byte {
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(b, '\n')
		if j < 0 {
			return nil
		}
		b = b[j+1:]
	}
	if j := bytes.IndexByte(b, '\n'); j >= 0 {
		b = b[:j]
	}
	return b
}

// measure walks a decoded YAML tree and charges its expanded size against
// budget, and checks its depth. Aliases are expanded by the decoder, so a
// tiny file can become a huge tree; this stops it before it is converted.
func measure(v any, depth int, budget *int64) error {
	if depth > MaxDepth {
		return fmt.Errorf("document is nested deeper than %d levels", MaxDepth)
	}
	*budget -= 8
	switch t := v.(type) {
	case string:
		*budget -= int64(len(t))
	case map[any]any:
		for k, e := range t {
			if err := measure(k, depth+1, budget); err != nil {
				return err
			}
			if err := measure(e, depth+1, budget); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range t {
			if err := measure(e, depth+1, budget); err != nil {
				return err
			}
		}
	}
	if *budget < 0 {
		return fmt.Errorf("file expands to more than %d bytes once YAML aliases are resolved", MaxExpandedBytes)
	}
	return nil
}

// describe names the JSON type of v for error messages.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	}
	return fmt.Sprintf("%T", v)
}

// Top-level keys of a resource document.
var topLevelKeys = []string{"apiVersion", "kind", "metadata", "spec", "status"}

// Metadata keys that Kubernetes fills in and that meshgate accepts and
// ignores, so that `kubectl get -o yaml` output can be fed back.
var ignoredMetaKeys = []string{"annotations", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"}

// resource turns one decoded document into a resource of set.
func (p *parser) resource(set *Set, c *collector, obj map[string]any, file string, index int) {
	kind := Kind("")
	switch v := obj["kind"].(type) {
	case nil:
		c.invalid("kind", "kind is required")
	case string:
		switch {
		case slices.Contains(Kinds, Kind(v)):
			kind = Kind(v)
			c.at.kind = kind
		case slices.Contains(otherIstioKinds, v):
			c.at.kind = Kind(v)
			c.unsupported("kind", "kind %s is not supported (supported: %s)", v, kindList())
		default:
			c.invalid("kind", "unknown kind %q (supported: %s)", v, kindList())
		}
	default:
		c.invalid("kind", "kind must be a string, got %s", describe(v))
	}

	switch v := obj["apiVersion"].(type) {
	case nil:
		c.invalid("apiVersion", "apiVersion is required (one of %s)", strings.Join(APIVersions, ", "))
	case string:
		if !slices.Contains(APIVersions, v) {
			c.invalid("apiVersion", "apiVersion %q is not supported (use one of %s)", v, strings.Join(APIVersions, ", "))
		}
	default:
		c.invalid("apiVersion", "apiVersion must be a string, got %s", describe(v))
	}

	meta := parseMeta(c, kind, obj["metadata"])
	meta.Source = file
	meta.Index = index - 1
	for _, k := range sortedKeys(obj) {
		if !slices.Contains(topLevelKeys, k) {
			c.invalid(k, "unknown top-level field %q (allowed: apiVersion, kind, metadata, spec, status)", k)
		}
	}

	specObj, hasSpec := obj["spec"]
	spec, ok := specObj.(map[string]any)
	switch {
	case !hasSpec || specObj == nil:
		c.invalid("spec", "spec is required")
		return
	case !ok:
		c.invalid("spec", "spec must be a map, got %s", describe(specObj))
		return
	case kind == "":
		return
	}

	msg := newSpec(kind)
	before := len(*c.errs)
	checkMessage(c, "spec", spec, msg.ProtoReflect().Descriptor())
	schemaErrs := slices.Clone((*c.errs)[before:])
	js, err := json.Marshal(spec)
	if err != nil {
		c.invalid("spec", "%v", err)
		return
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, msg); err != nil {
		if len(schemaErrs) == 0 {
			c.invalid("spec", "%s", protojsonMessage(err))
		}
		return
	}
	if len(schemaErrs) == 0 {
		validateResource(c, kind, &meta, msg)
		set.add(kind, meta, msg)
		return
	}
	// The values that did not fit the schema were dropped; validate the
	// rest, leaving out what the dropped values would explain.
	var more Errors
	vc := &collector{at: c.at, errs: &more}
	validateResource(vc, kind, &meta, msg)
	for _, e := range more {
		if !slices.ContainsFunc(schemaErrs, func(s *Error) bool { return underPath(e.Field, s.Field) }) && !c.full() {
			c.add(e.Err, e.Field, "%s", e.Msg)
		}
	}
}

func kindList() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// protojsonMessage strips the library prefix from a protojson error.
func protojsonMessage(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "proto:")
	msg = strings.TrimSpace(strings.ReplaceAll(msg, "\u00a0", " "))
	return "does not match the " + "Istio schema: " + msg
}

// underPath reports whether field is path or lies inside it.
func underPath(field, path string) bool {
	if !strings.HasPrefix(field, path) {
		return false
	}
	rest := field[len(path):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}

// newSpec returns an empty spec message for kind.
func newSpec(kind Kind) proto.Message {
	switch kind {
	case KindGateway:
		return &networking.Gateway{}
	case KindVirtualService:
		return &networking.VirtualService{}
	case KindDestinationRule:
		return &networking.DestinationRule{}
	case KindServiceEntry:
		return &networking.ServiceEntry{}
	case KindWorkloadEntry:
		return &networking.WorkloadEntry{}
	}
	return nil
}

// parseMeta reads metadata and reports its problems. It always returns a
// Meta (with whatever could be read) so later errors can name the resource.
func parseMeta(c *collector, kind Kind, v any) Meta {
	m := Meta{Namespace: DefaultNamespace}
	obj, ok := v.(map[string]any)
	if v == nil {
		c.invalid("metadata", "metadata with a name is required")
		c.at.name = m.Namespace + "/"
		return m
	}
	if !ok {
		c.invalid("metadata", "metadata must be a map, got %s", describe(v))
		return m
	}
	for _, k := range sortedKeys(obj) {
		switch {
		case k == "name" || k == "namespace" || k == "labels":
		case slices.Contains(ignoredMetaKeys, k):
		default:
			c.invalid("metadata."+k, "unknown metadata field %q (allowed: name, namespace, labels, annotations)", k)
		}
	}
	ns, nsOK := obj["namespace"].(string)
	if nsOK {
		m.Namespace = ns
	}
	name, nameOK := obj["name"].(string)
	if nameOK {
		m.Name = name
	}
	c.at.name = m.Namespace + "/" + m.Name
	if v, ok := obj["namespace"]; ok && v != nil && !nsOK {
		c.invalid("metadata.namespace", "namespace must be a string, got %s%s", describe(v), quoteHint(v))
	}
	nameReported := false
	if v := obj["name"]; v != nil && !nameOK {
		c.invalid("metadata.name", "name must be a string, got %s%s", describe(v), quoteHint(v))
		nameReported = true
	}
	if lv, ok := obj["labels"]; ok && lv != nil {
		lm, ok := lv.(map[string]any)
		if !ok {
			c.invalid("metadata.labels", "labels must be a map of strings, got %s", describe(lv))
		} else {
			m.Labels = make(map[string]string, len(lm))
			for _, k := range sortedKeys(lm) {
				s, ok := lm[k].(string)
				if !ok {
					c.invalid(mapField("metadata.labels", k), "label value must be a string, got %s%s", describe(lm[k]), quoteHint(lm[k]))
					continue
				}
				m.Labels[k] = s
			}
		}
	}
	if a, ok := obj["annotations"]; ok && a != nil {
		am, ok := a.(map[string]any)
		if !ok {
			c.invalid("metadata.annotations", "annotations must be a map of strings, got %s", describe(a))
		} else {
			for _, k := range sortedKeys(am) {
				if _, ok := am[k].(string); !ok {
					c.invalid(mapField("metadata.annotations", k), "annotation value must be a string, got %s%s", describe(am[k]), quoteHint(am[k]))
				}
			}
		}
	}
	checkMeta(c, kind, &m, nameReported)
	return m
}

// checkMeta validates name, namespace and labels. nameReported says the
// name was already reported as malformed (not a string).
func checkMeta(c *collector, kind Kind, m *Meta, nameReported bool) {
	switch {
	case m.Name == "":
		if !nameReported {
			c.invalid("metadata.name", "name is required")
		}
	case kind == KindGateway:
		// Gateways are referenced as "namespace/name", so Istio requires
		// a DNS label (no dots).
		if !isDNS1123Label(m.Name) {
			c.invalid("metadata.name", "Gateway name %q must be a lowercase DNS-1123 label (a-z, 0-9, '-', at most 63 characters, no dots)", m.Name)
		}
	default:
		if !isDNS1123Subdomain(m.Name) {
			c.invalid("metadata.name", "name %q must be a lowercase DNS-1123 subdomain (a-z, 0-9, '-', '.', at most 253 characters)", m.Name)
		}
	}
	if !isDNS1123Label(m.Namespace) {
		c.invalid("metadata.namespace", "namespace %q must be a lowercase DNS-1123 label", m.Namespace)
	}
	checkLabels(c, "metadata.labels", m.Labels)
}

// quoteHint adds advice when YAML turned an unquoted value into a boolean
// or number where a string was wanted.
func quoteHint(v any) string {
	switch v.(type) {
	case bool:
		return ` (quote it: YAML reads y/n/yes/no/on/off/true/false as booleans)`
	case json.Number, float64:
		return ` (quote it to make it a string)`
	}
	return ""
}
