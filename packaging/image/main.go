// Command image builds the ecr-node-auth container image without a Docker engine: an
// OCI image index (one image per architecture) written as an OCI layout. Each image is
// FROM scratch plus two layers: the CA bundle (the host's, from Debian's
// ca-certificates; the same layer in every image) and the static binary.
//
//	go run ./packaging/image -build-dir dist/build -arches "amd64 arm64" \
//	    -ca /etc/ssl/certs/ca-certificates.crt -version V -commit C -out dist/image
//
// The binaries are read from <build-dir>/<arch>/ecr-node-auth (`make binaries`).
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths inside the image.
const (
	BinaryPath = "/usr/bin/ecr-node-auth"
	CAPath     = "/etc/ssl/certs/ca-certificates.crt"
	Source     = "https://github.com/ecr-node-auth/ecr-node-auth"
)

func main() {
	buildDir := flag.String("build-dir", "dist/build", "directory holding <arch>/ecr-node-auth")
	arches := flag.String("arches", "amd64 arm64", "space-separated GOARCH list")
	ca := flag.String("ca", CAPath, "CA bundle to copy into the image (Debian's ca-certificates)")
	version := flag.String("version", "dev", "version label")
	commit := flag.String("commit", "unknown", "revision label")
	out := flag.String("out", "dist/image", "OCI layout directory to (re)write")
	flag.Parse()

	created := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fatal(fmt.Errorf("SOURCE_DATE_EPOCH: %w", err))
		}
		created = time.Unix(sec, 0).UTC()
	}
	opts := Options{
		Arches:  strings.Fields(*arches),
		Binary:  func(arch string) string { return filepath.Join(*buildDir, arch, "ecr-node-auth") },
		CAFile:  *ca,
		Version: *version,
		Commit:  *commit,
		Created: created,
	}
	idx, err := Build(opts)
	if err != nil {
		fatal(err)
	}
	if err := WriteLayout(*out, idx, opts.Version); err != nil {
		fatal(err)
	}
	d, _ := idx.Digest()
	fmt.Printf("wrote OCI layout %s: index %s (%s)\n", *out, d, strings.Join(opts.Arches, ", "))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}

// Options describe the image index to build.
type Options struct {
	Arches  []string
	Binary  func(arch string) string
	CAFile  string
	Version string
	Commit  string
	Created time.Time
}

// Labels are the org.opencontainers.image.* labels (and index annotations).
func (o Options) Labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":         "ecr-node-auth",
		"org.opencontainers.image.description":   "Private Amazon ECR credentials for containerd and the kubelet (node daemon)",
		"org.opencontainers.image.source":        Source,
		"org.opencontainers.image.url":           Source,
		"org.opencontainers.image.documentation": Source + "#readme",
		"org.opencontainers.image.version":       o.Version,
		"org.opencontainers.image.revision":      o.Commit,
		"org.opencontainers.image.created":       o.Created.Format(time.RFC3339),
		"org.opencontainers.image.vendor":        "ecr-node-auth",
	}
}

// Build makes the multi-arch index.
func Build(o Options) (v1.ImageIndex, error) {
	if len(o.Arches) == 0 {
		return nil, fmt.Errorf("no architectures")
	}
	caData, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w (apt-get install ca-certificates)", err)
	}
	caLayer, err := fileLayer(o.Created, CAPath, caData, 0o644)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range o.Arches {
		bin, err := os.ReadFile(o.Binary(arch))
		if err != nil {
			return nil, fmt.Errorf("binary for %s: %w (make binaries)", arch, err)
		}
		binLayer, err := fileLayer(o.Created, BinaryPath, bin, 0o755)
		if err != nil {
			return nil, err
		}
		img, err := image(o, arch, caLayer, binLayer)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", arch, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				MediaType: types.OCIManifestSchema1,
				Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
			},
		})
	}
	return mutate.Annotations(idx, o.Labels()).(v1.ImageIndex), nil
}

func image(o Options, arch string, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, addenda(o.Created, layers)...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	if arch == "arm64" {
		cf.Variant = "v8"
	}
	cf.Created = v1.Time{Time: o.Created}
	cf.Config.Entrypoint = []string{BinaryPath, "run"}
	cf.Config.Cmd = nil
	cf.Config.User = "0:0"
	cf.Config.Env = []string{"PATH=/usr/bin", "SSL_CERT_FILE=" + CAPath}
	cf.Config.Labels = o.Labels()
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, map[string]string{
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.revision": o.Commit,
	}).(v1.Image), nil
}

func addenda(created time.Time, layers []v1.Layer) []mutate.Addendum {
	var as []mutate.Addendum
	for _, l := range layers {
		as = append(as, mutate.Addendum{
			Layer:     l,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "ecr-node-auth packaging/image"},
		})
	}
	return as
}

// fileLayer is a gzip OCI layer holding one file and its parent directories, with fixed
// owners and times so the same inputs give the same digest.
func fileLayer(mtime time.Time, path string, data []byte, mode int64) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rel := strings.TrimPrefix(path, "/")
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: strings.Join(parts[:i], "/") + "/", Mode: 0o755,
			ModTime: mtime, Format: tar.FormatPAX,
		}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: rel, Mode: mode, Size: int64(len(data)),
		ModTime: mtime, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// WriteLayout replaces dir with an OCI layout holding idx, tagged refName.
func WriteLayout(dir string, idx v1.ImageIndex, refName string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": refName,
	}))
}
