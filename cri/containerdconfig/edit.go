package containerdconfig

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
)

// ErrRefused is wrapped by Plan errors for configs the edit will not touch
// (inline mirrors, syntax errors, shapes it cannot change line by line).
var ErrRefused = errors.New("refusing to edit containerd config")

// Edit is a planned change of containerd's config.
type Edit struct {
	// Before is the report on the current file.
	Before Report
	// Changed is false when config_path already reads the certs dir.
	Changed bool
	// Content is the new file (the old one when !Changed).
	Content []byte
	// Summary says what the edit does, or why none is needed.
	Summary string
	// Notes are things the operator should know (dropped paths, warnings kept).
	Notes []string
}

// PlanOptions tune Plan.
type PlanOptions struct {
	// NewFileVersion is the config version written when the file does not
	// exist: the installed containerd's (`containerd config default`): 2 for
	// containerd 1.x, 3 or 4 for 2.x.
	NewFileVersion int
}

// Plan computes the edit that makes the config read certsDir: config_path =
// certsDir in the registry table that exists (or the version's own one),
// changing only that line (or inserting one line or one small table); every
// other byte is kept. It refuses (ErrRefused) when the file has inline
// registry mirrors, since config_path beside them stops the CRI plugin from
// loading; moving them is left to the operator, whose files they are.
func Plan(path string, data []byte, exists bool, certsDir string, opt PlanOptions) (Edit, error) {
	if err := ValidateCertsDir(certsDir); err != nil {
		return Edit{}, err
	}
	certsDir = filepath.Clean(certsDir)
	e := Edit{Before: checkData(path, data, exists, certsDir), Content: data}
	if !exists {
		v := opt.NewFileVersion
		if v == 0 {
			return e, fmt.Errorf("%s does not exist and the installed containerd's config version is unknown", path)
		}
		plugin := PluginImages
		if v <= 2 {
			v, plugin = 2, PluginGRPCCRI
		}
		e.Content = []byte(fmt.Sprintf("# Written by ecr-node-auth setup-containerd: the CRI plugin reads registry hosts\n# (certs.d/<host>/hosts.toml) from config_path. Every other setting is containerd's default.\nversion = %d\n\n[plugins.%q.registry]\n  config_path = %s\n",
			v, plugin, quote(certsDir, false)))
		e.Changed = true
		e.Summary = fmt.Sprintf("create %s (version %d) with %s.config_path = %q", path, v, tableKey(plugin, false), certsDir)
		return e, nil
	}
	d, err := parse(data)
	if err != nil {
		return e, fmt.Errorf("%w %s: %v; fix it first (containerd cannot start with it either)", ErrRefused, path, err)
	}
	loc := d.locate()
	table := tableKey(loc.plugin, loc.v1)
	if len(e.Before.Mirrors) > 0 {
		return e, fmt.Errorf("%w %s: %s has inline mirrors for %s, which conflict with config_path (containerd would refuse to load the CRI plugin); move each into %s/<host>/hosts.toml, delete the registry.mirrors tables, and run setup-containerd again",
			ErrRefused, path, table, strings.Join(e.Before.Mirrors, ", "), certsDir)
	}
	for _, p := range e.Before.Problems {
		if p.Severity == Warning && !strings.Contains(p.Message, "config_path") {
			e.Notes = append(e.Notes, p.Message)
		}
	}
	cur := e.Before.ConfigPaths
	kvPath := append(append([]string{}, loc.path...), "config_path")
	kv, explicit := d.keys[join(kvPath)]
	if explicit && !e.Before.Defaulted && len(cur) > 0 && cur[0] == certsDir {
		e.Summary = fmt.Sprintf("already set: %s.config_path = %q reads %s", table, strings.Join(cur, ":"), certsDir)
		if len(cur) > 1 {
			e.Notes = append(e.Notes, fmt.Sprintf("config_path lists more dirs after %s (%s); left as is: ecr-node-auth writes into the first", certsDir, strings.Join(cur[1:], ":")))
		}
		return e, nil
	}
	if !e.Before.Defaulted && len(cur) > 0 {
		var dropped []string
		for _, p := range cur {
			if p != certsDir {
				dropped = append(dropped, p)
			}
		}
		if len(dropped) > 0 {
			e.Notes = append(e.Notes, fmt.Sprintf("config_path was %q; containerd no longer reads %s: move any host directories you still need from there into %s",
				strings.Join(cur, ":"), strings.Join(dropped, ", "), certsDir))
		}
	}

	var out []byte
	switch {
	case explicit && kv.valEnd > kv.valStart:
		// Replace the value only, in the file's own quoting style.
		out = splice(data, kv.valStart, kv.valEnd, quote(certsDir, kv.singleQuot))
	case explicit:
		return e, fmt.Errorf("%w %s: %s.config_path is not a string; set it by hand to %q", ErrRefused, path, table, certsDir)
	default:
		out, err = d.insert(loc, certsDir)
		if err != nil {
			return e, fmt.Errorf("%w %s: %v; set %s.config_path = %q by hand", ErrRefused, path, err, table, certsDir)
		}
	}
	after := checkData(path, out, true, certsDir)
	if len(after.ConfigPaths) == 0 || after.ConfigPaths[0] != certsDir || after.Defaulted || after.Table != table {
		return e, fmt.Errorf("%w %s: internal check of the edited file failed (table %s, config_path %q); set %s.config_path = %q by hand",
			ErrRefused, path, after.Table, strings.Join(after.ConfigPaths, ":"), table, certsDir)
	}
	e.Content, e.Changed = out, true
	e.Summary = fmt.Sprintf("set %s.config_path = %q", table, certsDir)
	return e, nil
}

// insert adds config_path where the registry table is missing the key.
func (d *doc) insert(loc location, certsDir string) ([]byte, error) {
	reg := loc.path
	single := bytes.Contains(d.data, []byte("plugins.'"))
	// 1. An explicit [..registry] header: a line right after it.
	if h, ok := d.headers[join(reg)]; ok {
		line := h.indent + "  config_path = " + quote(certsDir, single) + "\n"
		return splice(d.data, h.lineEnd, h.lineEnd, ensureNL(d.data, h.lineEnd, line)), nil
	}
	// 2. registry given as an inline table or an array: not editable by line.
	if kv, ok := d.keys[join(reg)]; ok || d.has(reg...) && !isMap(d.get(reg...)) {
		if ok && kv.inline {
			return nil, fmt.Errorf("%s is an inline table", tableKey(loc.plugin, loc.v1))
		}
		return nil, fmt.Errorf("%s is not a table", tableKey(loc.plugin, loc.v1))
	}
	// 3. registry made of dotted keys (registry.x = ... under a parent table):
	// another dotted key beside them.
	for _, kv := range d.sortedKeys() {
		if hasPrefix(kv.path, reg) && len(kv.table) < len(reg) {
			if kv.inline && len(kv.path) <= len(reg)+1 {
				continue
			}
			rel := append(append([]string{}, reg[len(kv.table):]...), "config_path")
			line := kv.indent + dotted(rel) + " = " + quote(certsDir, single) + "\n"
			return splice(d.data, kv.lineEnd, kv.lineEnd, ensureNL(d.data, kv.lineEnd, line)), nil
		}
	}
	block := func(indent string) string {
		return indent + "[" + headerKey(reg, single) + "]\n" + indent + "  config_path = " + quote(certsDir, single) + "\n"
	}
	// 4. Sub-tables of registry exist ([..registry.configs."h".tls]): the
	// registry header goes just before the first of them.
	for _, h := range d.order {
		if hasPrefix(h.path, reg) {
			return splice(d.data, h.lineStart, h.lineStart, block(h.indent)+"\n"), nil
		}
	}
	// 5. The plugin table exists: a registry sub-table at the end of its keys.
	if h, ok := d.headers[join(reg[:2])]; ok {
		at := len(d.data)
		for _, o := range d.order {
			if o.lineStart > h.lineStart {
				at = o.lineStart
				break
			}
		}
		b := block(h.indent + "  ")
		if at < len(d.data) {
			b += "\n"
		} else {
			b = "\n" + b
		}
		return splice(d.data, at, at, ensureNL(d.data, at, b)), nil
	}
	// 6. Otherwise a new table at the end of the file.
	sep := "\n"
	if len(d.data) == 0 {
		sep = ""
	}
	return splice(d.data, len(d.data), len(d.data), ensureNL(d.data, len(d.data), sep+block(""))), nil
}

func (d *doc) sortedKeys() []keyval {
	out := make([]keyval, 0, len(d.keys))
	for _, kv := range d.keys {
		out = append(out, kv)
	}
	slices.SortFunc(out, func(a, b keyval) int { return a.lineStart - b.lineStart })
	return out
}

func isMap(v any) bool { _, ok := v.(map[string]any); return ok }

// ensureNL prefixes s with a newline when inserting at off would join it to
// a previous line that has none (a file without a final newline).
func ensureNL(data []byte, off int, s string) string {
	if off > 0 && data[off-1] != '\n' {
		return "\n" + s
	}
	return s
}

func splice(data []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(data)+len(s))
	out = append(out, data[:from]...)
	out = append(out, s...)
	return append(out, data[to:]...)
}

// headerKey renders plugins."<id>".registry with the file's quote style.
func headerKey(path []string, single bool) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = keyPart(p, single)
	}
	return strings.Join(parts, ".")
}

func dotted(path []string) string { return headerKey(path, false) }

func keyPart(p string, single bool) string {
	bare := p != ""
	for _, r := range p {
		if !(r == '-' || r == '_' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			bare = false
		}
	}
	if bare {
		return p
	}
	return quote(p, single)
}

// quote renders s as a TOML string: a literal 'string' when asked and
// possible, else a basic "string" with TOML escapes.
func quote(s string, single bool) string {
	if single && !strings.ContainsAny(s, "'\n\r") {
		return "'" + s + "'"
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// ValidateCertsDir checks a certs dir can be a config_path entry: absolute,
// no ':' (the list separator) and no control characters.
func ValidateCertsDir(dir string) error {
	switch {
	case dir == "":
		return errors.New("certs dir is empty")
	case !filepath.IsAbs(dir):
		return fmt.Errorf("certs dir %q must be an absolute path", dir)
	case strings.ContainsRune(dir, filepath.ListSeparator):
		return fmt.Errorf("certs dir %q contains %q, containerd's config_path list separator", dir, string(filepath.ListSeparator))
	case strings.IndexFunc(dir, unicode.IsControl) >= 0:
		return fmt.Errorf("certs dir %q contains control characters", dir)
	}
	return nil
}
