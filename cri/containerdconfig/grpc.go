package containerdconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// DefaultGRPCAddress is containerd's gRPC (and CRI) socket when its config
// sets no [grpc] address.
const DefaultGRPCAddress = "/run/containerd/containerd.sock"

// GRPCAddress returns the socket containerd serves gRPC (and so CRI) on, from
// the [grpc] address of its config at path: DefaultGRPCAddress when the file
// or the key is absent, an error naming the line when the file is not TOML.
func GRPCAddress(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultGRPCAddress, nil
	}
	if err != nil {
		return "", fmt.Errorf("read containerd config: %w", err)
	}
	return grpcAddress(path, data)
}

func grpcAddress(path string, data []byte) (string, error) {
	var c struct {
		GRPC struct {
			Address string `toml:"address"`
		} `toml:"grpc"`
	}
	if err := toml.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("containerd config %s: %w", path, decodeError(err))
	}
	if a := strings.TrimSpace(c.GRPC.Address); a != "" {
		return strings.TrimPrefix(a, "unix://"), nil
	}
	return DefaultGRPCAddress, nil
}
