package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	pullsPerIter = 1000
	// teamRole is a pod's role (KEP-4412 service-account mode).
	teamRole = "arn:aws:iam::111122223333:role/bench-team-a"
)

// coldRegions are the regions the cold pulls ask for, one per iteration, none
// configured.
var coldRegions = []string{"us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1", "ap-southeast-2", "sa-east-1", "ca-central-1", "eu-north-1", "ap-south-1", "us-east-2"}

// pull is one credential lookup the way a client on the node makes it.
type pull func(ctx context.Context, c *api.Client, host string, i int) (api.Credentials, error)

// pullKinds: the docker credential helper and tools asking with an image reference or
// a server URL, the kubelet plugin in node mode (registry host), and the kubelet plugin
// in service-account mode (POST with the pod's token and role annotation). nil saToken
// leaves the last one out.
func pullKinds(saToken string) []pull {
	kinds := []pull{
		func(ctx context.Context, c *api.Client, host string, i int) (api.Credentials, error) {
			return c.Credentials(ctx, fmt.Sprintf("%s/team/app-%d:v%d", host, i%7, i%3))
		},
		func(ctx context.Context, c *api.Client, host string, _ int) (api.Credentials, error) {
			return c.Credentials(ctx, host)
		},
		func(ctx context.Context, c *api.Client, host string, _ int) (api.Credentials, error) {
			return c.Credentials(ctx, "https://"+host)
		},
	}
	if saToken != "" {
		kinds = append(kinds, func(ctx context.Context, c *api.Client, host string, i int) (api.Credentials, error) {
			cred, err := c.WorkloadCredentials(ctx, api.WorkloadRequest{
				Image:                     fmt.Sprintf("%s/team/app-%d:v1", host, i%7),
				ServiceAccountToken:       saToken,
				ServiceAccountAnnotations: map[string]string{"eks.amazonaws.com/role-arn": teamRole},
			})
			if err == nil && cred.Source != api.SourceWorkload {
				err = fmt.Errorf("service-account request answered from %q, want %q", cred.Source, api.SourceWorkload)
			}
			return cred, err
		})
	}
	return kinds
}

// pullBatch makes n pulls from workers goroutines, released at once, pull i going to
// hosts[i%len(hosts)] with kinds[i%len(kinds)]; every answer must carry a token the
// fake issued.
func (w *world) pullBatch(c *api.Client, hosts []string, kinds []pull, n, workers int) error {
	gate := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			<-gate
			for i := g; i < n; i += workers {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				host := hosts[i%len(hosts)]
				cred, err := kinds[i%len(kinds)](ctx, c, host, i)
				cancel()
				if err == nil {
					if _, ok := w.fake.LookupECRToken(cred.Password); !ok {
						err = fmt.Errorf("%s: a password the fake did not issue", host)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("pull %d (%s, kind %d): %w", i, host, i%len(kinds), err)
					return
				}
			}
		})
	}
	close(gate)
	wg.Wait()
	close(errs)
	return <-errs // nil when no worker failed
}

// BenchmarkPulls counts the AWS calls the daemon makes for pulls: each iteration is
// 1,000 credential lookups through the socket, made by 8 (warm) or 32 (cold) clients
// at once, mixing the request forms of the docker helper, the kubelet plugin in node
// mode and in service-account mode (warm only). Every answer is checked against the
// tokens the fake issued; the fake counts every STS and ECR call.
//
//   - warm: a daemon holding tokens for 3 registries in 2 regions, and (after one
//     warm-up round) the pod role's credentials. aws_calls_per_1000_pulls: target 0.
//   - cold: each iteration starts a daemon configured for us-east-1 only (timer
//     stopped), then pulls from a region it does not serve: the first pull fetches that
//     region on demand. ecr_calls_per_new_region: the ECR calls for that region, target
//     exactly 1 (one call shared by the concurrent requests); aws_calls_per_1000_pulls
//     (informational): all AWS calls in the batch.
func BenchmarkPulls(b *testing.B) {
	w := newWorldWith(b, fakeaws.Options{AllowedRoleARNs: []string{teamRole}})
	td := w.tokenDir(b)
	acct := w.fake.AccountID()

	b.Run("warm", func(b *testing.B) {
		hosts := []string{w.ecrHost, otherAccount + ".dkr.ecr." + region + ".amazonaws.com", acct + ".dkr.ecr.eu-west-1.amazonaws.com"}
		cfg, _, sock, err := w.config(filepath.Join(w.dir, "warm"), td.Path(), hosts...)
		if err != nil {
			b.Fatal(err)
		}
		p := startServing(b, w, cfg)
		c := api.NewClient(sock)
		if err := waitReady(p, c, len(hosts)); err != nil {
			b.Fatal(err)
		}
		kinds := pullKinds(w.fake.MintToken(fakeaws.TokenSpec{Subject: "system:serviceaccount:team-a:app"}))
		// Warm-up: every kind for every host, so the pod role's credentials are held too.
		if err := w.pullBatch(c, hosts, kinds, len(hosts)*len(kinds), 1); err != nil {
			b.Fatal(err)
		}
		calls0 := len(w.fake.CallLog())
		iters := 0
		for b.Loop() {
			if err := w.pullBatch(c, hosts, kinds, pullsPerIter, 8); err != nil {
				b.Fatal(err)
			}
			iters++
		}
		b.StopTimer()
		calls := len(w.fake.CallLog()) - calls0
		b.ReportMetric(float64(calls)/float64(iters), "aws_calls_per_1000_pulls")
		b.ReportMetric(float64(iters*pullsPerIter)/b.Elapsed().Seconds(), "pulls/s")
		b.ReportMetric(0, "ns/op")
	})

	b.Run("cold", func(b *testing.B) {
		kinds := pullKinds("")
		var perRegion, perBatch []int
		var took []time.Duration
		i := 0
		for b.Loop() {
			b.StopTimer()
			r := coldRegions[i%len(coldRegions)]
			i++
			cfg, _, sock, err := w.config(filepath.Join(w.dir, fmt.Sprintf("cold-%d", i)), td.Path())
			if err != nil {
				b.Fatal(err)
			}
			p, err := start(w, cfg)
			if err != nil {
				b.Fatal(err)
			}
			c := api.NewClient(sock)
			if err := waitReady(p, c, 1); err != nil {
				_ = p.stop()
				b.Fatal(err)
			}
			host := acct + ".dkr.ecr." + r + ".amazonaws.com"
			calls0 := len(w.fake.CallLog())
			b.StartTimer()

			t0 := time.Now()
			err = w.pullBatch(c, []string{host}, kinds, pullsPerIter, 32)
			took = append(took, time.Since(t0))

			b.StopTimer()
			log := w.fake.CallLog()[calls0:]
			stopErr := p.stop()
			if err != nil {
				b.Fatal(err)
			}
			if stopErr != nil {
				b.Fatal(stopErr)
			}
			n := 0
			for _, call := range log {
				if call.Action == fakeaws.ActionGetAuthorizationToken && call.Region == r {
					n++
				}
			}
			perRegion, perBatch = append(perRegion, n), append(perBatch, len(log))
			b.StartTimer()
		}
		b.StopTimer()
		mean := func(xs []int) float64 {
			s := 0
			for _, x := range xs {
				s += x
			}
			return float64(s) / float64(len(xs))
		}
		b.ReportMetric(mean(perRegion), "ecr_calls_per_new_region")
		b.ReportMetric(float64(slices.Min(perRegion)), "ecr_calls_per_new_region-min")
		b.ReportMetric(float64(slices.Max(perRegion)), "ecr_calls_per_new_region-max")
		b.ReportMetric(mean(perBatch), "aws_calls_per_1000_pulls")
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2])/float64(time.Millisecond), "ms/1000_pulls")
		b.ReportMetric(0, "ns/op")
	})
}
