package containerdconfig

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// doc is a parsed config: the decoded tree for semantics, plus the byte
// positions of table headers and keys so that an edit can change single
// lines and keep everything else (comments, order, formatting) as written.
type doc struct {
	data    []byte
	tree    map[string]any
	version int
	headers map[string]header // "a\x00b" -> explicit [a.b] header
	keys    map[string]keyval // full dotted path of every key = value
	order   []header          // headers in file order
}

type header struct {
	path      []string
	lineStart int // offset of the header's line
	lineEnd   int // offset just after the header's line (after '\n', or len(data))
	indent    string
	array     bool
}

type keyval struct {
	path       []string // full path (table + key)
	table      []string // the header it sits under
	rel        []string // the key as written (dotted parts)
	valStart   int      // value bytes
	valEnd     int
	lineStart  int
	lineEnd    int
	indent     string
	inline     bool // value is an inline table
	singleQuot bool // value is a literal 'string'
}

func join(path []string) string { return strings.Join(path, "\x00") }

func hasPrefix(path, prefix []string) bool {
	if len(path) < len(prefix) {
		return false
	}
	for i := range prefix {
		if path[i] != prefix[i] {
			return false
		}
	}
	return true
}

func parse(data []byte) (*doc, error) {
	d := &doc{data: data, headers: map[string]header{}, keys: map[string]keyval{}}
	if err := toml.Unmarshal(data, &d.tree); err != nil {
		return nil, decodeError(err)
	}
	if d.tree == nil {
		d.tree = map[string]any{}
	}
	d.version = 1
	if v, ok := d.tree["version"]; ok {
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("version = %v is not an integer", v)
		}
		d.version = int(n)
	}
	var p unstable.Parser
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			var path []string
			var first int = -1
			it := e.Key()
			for it.Next() {
				n := it.Node()
				if first < 0 {
					first = int(n.Raw.Offset)
				}
				path = append(path, string(n.Data))
			}
			table = path
			ls, le := lineBounds(data, first)
			h := header{path: path, lineStart: ls, lineEnd: le, indent: indentOf(data, ls), array: e.Kind == unstable.ArrayTable}
			d.order = append(d.order, h)
			if !h.array {
				d.headers[join(path)] = h
			}
		case unstable.KeyValue:
			var rel []string
			first := -1
			it := e.Key()
			for it.Next() {
				n := it.Node()
				if first < 0 {
					first = int(n.Raw.Offset)
				}
				rel = append(rel, string(n.Data))
			}
			v := e.Value()
			ls, le := lineBounds(data, first)
			kv := keyval{
				path: append(append([]string{}, table...), rel...), table: table, rel: rel,
				lineStart: ls, lineEnd: le, indent: indentOf(data, ls),
				inline: v.Kind == unstable.InlineTable,
			}
			if v.Kind == unstable.String {
				kv.valStart = int(v.Raw.Offset)
				kv.valEnd = kv.valStart + int(v.Raw.Length)
				kv.singleQuot = data[kv.valStart] == '\''
			}
			d.keys[join(kv.path)] = kv
		}
	}
	if err := p.Error(); err != nil {
		return nil, err
	}
	return d, nil
}

func lineBounds(data []byte, off int) (start, end int) {
	if off < 0 {
		return len(data), len(data)
	}
	start = bytes.LastIndexByte(data[:off], '\n') + 1
	if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
		end = off + i + 1
	} else {
		end = len(data)
	}
	return start, end
}

func indentOf(data []byte, lineStart int) string {
	i := lineStart
	for i < len(data) && (data[i] == ' ' || data[i] == '\t') {
		i++
	}
	return string(data[lineStart:i])
}

// get walks the decoded tree.
func (d *doc) get(path ...string) any {
	var cur any = d.tree
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur, ok = m[p]
		if !ok {
			return nil
		}
	}
	return cur
}

func (d *doc) has(path ...string) bool { return d.get(path...) != nil }

// location is the registry table containerd reads for this file.
type location struct {
	plugin   string
	v1       bool
	path     []string // plugins, <plugin>, registry
	warnings []string
}

// locate picks the registry table that the file's version makes containerd
// read: the one that exists (never a second one), else the version's own.
func (d *doc) locate() location {
	var cands []string
	switch {
	case d.version <= 1:
		cands = []string{pluginV1CRI, PluginGRPCCRI}
	case d.version == 2:
		cands = []string{PluginGRPCCRI, PluginImages}
	default:
		cands = []string{PluginImages}
	}
	loc := location{plugin: cands[0], v1: d.version <= 1}
	found := false
	for _, c := range cands {
		if d.has("plugins", c, "registry") {
			loc.plugin, found = c, true
			break
		}
	}
	if !found {
		for _, c := range cands {
			if d.has("plugins", c) {
				loc.plugin = c
				break
			}
		}
	}
	loc.path = []string{"plugins", loc.plugin, "registry"}
	switch {
	case d.version == 2 && loc.plugin == PluginGRPCCRI && d.has("plugins", PluginImages, "registry"):
		loc.warnings = append(loc.warnings, fmt.Sprintf("version 2 file has both %s and %s: containerd 1.x reads the first only, and containerd 2.x replaces the second with the first when it migrates the file",
			tableKey(PluginGRPCCRI, false), tableKey(PluginImages, false)))
	case d.version == 2 && loc.plugin == PluginImages:
		loc.warnings = append(loc.warnings, fmt.Sprintf("version 2 file keeps its registry in %s: only containerd 2.x reads that table (containerd 1.x ignores it)",
			tableKey(PluginImages, false)))
	case d.version >= 3 && d.has("plugins", PluginGRPCCRI, "registry"):
		loc.warnings = append(loc.warnings, fmt.Sprintf("version %d file also has %s: containerd 2.0-2.3 ignore it, later releases migrate it over %s",
			d.version, tableKey(PluginGRPCCRI, false), tableKey(PluginImages, false)))
	}
	return loc
}
