package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

// Doctor runs `ecr-node-auth doctor ARGS` with the daemon's environment (the fake's
// AWS endpoints, nothing else) and returns its stdout and exit status. Both streams
// are recorded as an artifact for the secret hygiene check.
func (d *Daemon) Doctor(args ...string) (stdout []byte, exit int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Bin, append([]string{"doctor"}, args...)...)
	cmd.Env = d.Env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	RecordArtifact(d.t.Name()+"/doctor", append(out.Bytes(), errb.Bytes()...))
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.Bytes(), -1, fmt.Errorf("ecr-node-auth doctor: %v: %s", err, errb.String())
	}
	return out.Bytes(), 0, nil
}
