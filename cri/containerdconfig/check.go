// Package containerdconfig reads containerd's config.toml to find where the
// CRI plugin looks for registry hosts (config_path), checks that it reads the
// ecr-node-auth certs dir, and plans a minimal, comment-preserving edit that
// makes it do so (used by `ecr-node-auth setup-containerd`; the daemon only
// checks).
//
// Every config format in use is understood:
//   - version 1 (containerd 1.x, deprecated): [plugins.cri.registry]
//   - version 2 (containerd 1.x and 2.x): [plugins."io.containerd.grpc.v1.cri".registry],
//     or, on managed containerd 2.x nodes, [plugins."io.containerd.cri.v1.images".registry]
//   - version 3 and 4 (containerd 2.x): [plugins."io.containerd.cri.v1.images".registry]
//   - no file, or no registry table: containerd 2.x's built-in default
//     "/etc/containerd/certs.d:/etc/docker/certs.d" (containerd 1.x reads no certs dir).
package containerdconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Plugin IDs that hold the registry table.
const (
	// PluginGRPCCRI is the CRI plugin of containerd 1.x (config version 2);
	// containerd 2.x migrates its registry table to PluginImages on load.
	PluginGRPCCRI = "io.containerd.grpc.v1.cri"
	// PluginImages is containerd 2.x's CRI images plugin (config version 3+).
	PluginImages = "io.containerd.cri.v1.images"
	// pluginV1CRI is the short name of the CRI plugin in version 1 files.
	pluginV1CRI = "cri"
)

// DefaultConfigPath is containerd 2.x's config_path on Linux when the file
// sets neither config_path nor mirrors (plugins/cri/images/plugin.go).
const DefaultConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"

// Severity of a Problem.
type Severity string

const (
	// Error: containerd will not use the certs dir (or will not start the CRI plugin).
	Error Severity = "error"
	// Warning: works, but fragile or surprising.
	Warning Severity = "warning"
)

// Problem is one finding with the fix an operator should apply.
type Problem struct {
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix"`
}

func (p Problem) String() string { return string(p.Severity) + ": " + p.Message + "; fix: " + p.Fix }

// Report is what Check found.
type Report struct {
	Path string `json:"path"`
	// Exists is false when the file does not exist.
	Exists bool `json:"exists"`
	// Version is the file's `version` (1 when the key is absent; 0 without a file).
	Version int `json:"version"`
	// Table is the registry table containerd reads config_path from, as a
	// TOML key (e.g. plugins."io.containerd.cri.v1.images".registry); it may
	// not exist in the file yet.
	Table string `json:"table"`
	// ConfigPaths is config_path split on ':' (containerd's list form). When
	// the file sets none, it is containerd 2.x's default and Defaulted is true.
	ConfigPaths []string `json:"configPaths"`
	Defaulted   bool     `json:"defaulted,omitempty"`
	// IncludesCertsDir: certsDir is one of ConfigPaths.
	IncludesCertsDir bool `json:"includesCertsDir"`
	// Mirrors and Configs list the hosts with inline registry.mirrors and
	// registry.configs/auths entries (sorted).
	Mirrors  []string  `json:"mirrors,omitempty"`
	Configs  []string  `json:"configs,omitempty"`
	Problems []Problem `json:"problems,omitempty"`
}

// OK reports whether no problem is an error.
func (r Report) OK() bool {
	for _, p := range r.Problems {
		if p.Severity == Error {
			return false
		}
	}
	return true
}

// Errors returns the error-severity problems.
func (r Report) Errors() []Problem {
	var out []Problem
	for _, p := range r.Problems {
		if p.Severity == Error {
			out = append(out, p)
		}
	}
	return out
}

func (r *Report) add(sev Severity, msg, fix string) {
	r.Problems = append(r.Problems, Problem{Severity: sev, Message: msg, Fix: fix})
}

// Check reads containerd's config at path and reports whether its CRI
// registry config_path includes certsDir. Problems (missing file, syntax
// error with its line, missing or wrong config_path, inline mirrors or
// configs) are in the Report; the error is only for a file that cannot be
// read at all.
func Check(path, certsDir string) (Report, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return checkData(path, nil, false, certsDir), nil
	}
	if err != nil {
		return Report{Path: path}, fmt.Errorf("read containerd config: %w", err)
	}
	return checkData(path, data, true, certsDir), nil
}

// CheckBytes is Check on content already read (exists=false: no file).
func CheckBytes(path string, data []byte, exists bool, certsDir string) Report {
	return checkData(path, data, exists, certsDir)
}

func checkData(path string, data []byte, exists bool, certsDir string) Report {
	certsDir = filepath.Clean(certsDir)
	r := Report{Path: path, Exists: exists}
	fixSetup := fmt.Sprintf("run `ecr-node-auth setup-containerd` (sets config_path = %q)", certsDir)
	if !exists {
		r.Table = tableKey(PluginImages, false)
		r.ConfigPaths, r.Defaulted = splitList(DefaultConfigPath), true
		r.IncludesCertsDir = slices.Contains(r.ConfigPaths, certsDir)
		r.add(Warning, fmt.Sprintf("containerd config %s does not exist: containerd 2.x then reads hosts from its default %q, containerd 1.x from no certs dir", path, DefaultConfigPath),
			fixSetup+" to create it")
		r.checkPaths(certsDir, fixSetup)
		return r
	}
	d, perr := parse(data)
	if perr != nil {
		r.add(Error, fmt.Sprintf("containerd config %s: %v (containerd refuses to start with it)", path, perr),
			"fix the TOML at that line, then check it with `containerd --config "+path+" config dump`")
		return r
	}
	r.Version = d.version
	loc := d.locate()
	r.Table = tableKey(loc.plugin, loc.v1)
	for _, w := range loc.warnings {
		r.add(Warning, w, "keep one registry table: "+r.Table)
	}
	reg, _ := d.get(loc.path...).(map[string]any)
	r.Mirrors = mapKeys(reg["mirrors"])
	r.Configs = mapKeys(reg["configs"])
	for _, h := range mapKeys(reg["auths"]) {
		if !slices.Contains(r.Configs, h) {
			r.Configs = append(r.Configs, h)
		}
	}
	slices.Sort(r.Configs)

	raw, hasPath := reg["config_path"]
	value, isString := raw.(string)
	switch {
	case hasPath && !isString:
		r.add(Error, fmt.Sprintf("%s.config_path is %T, not a string", r.Table, raw), fixSetup)
		return r
	case value != "":
		r.ConfigPaths = splitList(value)
	case len(r.Mirrors) == 0 && d.version >= 3:
		// Only containerd 2.x reads version 3+ files: its default applies.
		r.ConfigPaths, r.Defaulted = splitList(DefaultConfigPath), true
		what := "sets no config_path"
		if hasPath {
			what = "sets config_path = \"\""
		}
		r.add(Warning, fmt.Sprintf("%s %s: containerd 2.x falls back to its default %q", r.Table, what, DefaultConfigPath), fixSetup+" to make it explicit")
	}
	if len(r.Mirrors) > 0 {
		if value != "" {
			r.add(Error, fmt.Sprintf("%s sets both config_path and inline mirrors for %s: containerd refuses to load the CRI plugin (\"`mirrors` cannot be set when `config_path` is provided\") and the node goes NotReady",
				r.Table, strings.Join(r.Mirrors, ", ")),
				"move each mirror into <certs dir>/<host>/hosts.toml ([host.\"<endpoint>\"] tables) and delete the registry.mirrors tables")
		} else {
			r.add(Error, fmt.Sprintf("%s has inline mirrors for %s and no config_path: containerd uses them and never reads a certs dir, so hosts.toml files are ignored",
				r.Table, strings.Join(r.Mirrors, ", ")),
				"move each mirror into <certs dir>/<host>/hosts.toml, delete the registry.mirrors tables, then "+fixSetup)
		}
	}
	if len(r.Configs) > 0 {
		r.add(Warning, fmt.Sprintf("%s has deprecated inline registry.configs/auths for %s: credentials or TLS set there conflict with (or, with config_path, are ignored in favour of) hosts.toml",
			r.Table, strings.Join(r.Configs, ", ")),
			"move TLS settings (ca, client, skip_verify) into <certs dir>/<host>/hosts.toml and delete the registry.configs/auths tables")
	}
	if r.ConfigPaths == nil && len(r.Mirrors) == 0 {
		what := "sets no config_path"
		if hasPath {
			what = "sets config_path = \"\""
		}
		r.add(Error, fmt.Sprintf("%s %s: containerd 1.x then reads no certs dir (containerd 2.x falls back to %q)", r.Table, what, DefaultConfigPath), fixSetup)
	}
	r.checkPaths(certsDir, fixSetup)
	r.checkImports(path, d)
	return r
}

// checkImports warns about imported files (containerd 2.x's default imports
// /etc/containerd/conf.d/*.toml) that also set registry settings: containerd
// merges them over this file, so what it uses can differ from what the file says.
func (r *Report) checkImports(path string, d *doc) {
	list, _ := d.tree["imports"].([]any)
	for _, v := range list {
		imp, _ := v.(string)
		if imp == "" {
			continue
		}
		imp = filepath.Clean(imp)
		if !filepath.IsAbs(imp) {
			imp = filepath.Join(filepath.Dir(path), imp)
		}
		matches := []string{imp}
		if strings.Contains(imp, "*") {
			matches, _ = filepath.Glob(imp)
		}
		for _, m := range matches {
			data, err := os.ReadFile(m)
			if err != nil {
				continue
			}
			sub, err := parse(data)
			if err != nil {
				r.add(Error, fmt.Sprintf("imported containerd config %s: %v", m, err), "fix or remove that file; containerd refuses to start with it")
				continue
			}
			for _, p := range []string{PluginGRPCCRI, PluginImages, pluginV1CRI} {
				if sub.has("plugins", p, "registry") {
					r.add(Warning, fmt.Sprintf("imported file %s also sets %s: containerd merges it over %s", m, tableKey(p, false), path),
						"keep registry settings in one file; check the result with `containerd config dump`")
				}
			}
		}
	}
}

// checkPaths adds the findings about ConfigPaths versus certsDir.
func (r *Report) checkPaths(certsDir, fixSetup string) {
	if len(r.ConfigPaths) == 0 {
		return
	}
	r.IncludesCertsDir = slices.Contains(r.ConfigPaths, certsDir)
	if !r.IncludesCertsDir {
		if r.Defaulted {
			r.add(Error, fmt.Sprintf("containerd's default config_path %q does not include the certs dir %s", DefaultConfigPath, certsDir), fixSetup)
		} else {
			r.add(Error, fmt.Sprintf("%s.config_path = %q does not include the certs dir %s: containerd never reads the daemon's hosts.toml files",
				r.Table, strings.Join(r.ConfigPaths, ":"), certsDir),
				fixSetup+", or set containerd.certsDir in ecr-node-auth's config to "+r.ConfigPaths[0])
		}
		return
	}
	if len(r.ConfigPaths) > 1 {
		if r.ConfigPaths[0] == certsDir {
			r.add(Warning, fmt.Sprintf("config_path lists %d dirs (%s): containerd uses, per host, the first dir that has that host; ecr-node-auth writes into the first, %s",
				len(r.ConfigPaths), strings.Join(r.ConfigPaths, ":"), certsDir),
				fmt.Sprintf("nothing needed; to make it unambiguous set config_path = %q", certsDir))
		} else {
			r.add(Error, fmt.Sprintf("config_path lists %s before the certs dir %s: a host directory there hides the daemon's hosts.toml for the same host",
				strings.Join(r.ConfigPaths[:slices.Index(r.ConfigPaths, certsDir)], ":"), certsDir),
				fixSetup+" (normalises config_path to the certs dir alone)")
		}
	}
}

// splitList splits a config_path value as containerd does (filepath.SplitList),
// cleaning each entry and dropping empty ones.
func splitList(v string) []string {
	var out []string
	for _, p := range filepath.SplitList(v) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, filepath.Clean(p))
		}
	}
	return out
}

func mapKeys(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// tableKey renders the registry table's TOML key.
func tableKey(plugin string, v1 bool) string {
	if v1 && plugin == pluginV1CRI {
		return "plugins.cri.registry"
	}
	return `plugins."` + plugin + `".registry`
}

// decodeError formats a go-toml error with its line.
func decodeError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d column %d: %s", row, col, de.Error())
	}
	return err
}
