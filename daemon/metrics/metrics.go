// Package metrics holds the daemon's Prometheus metrics and the small HTTP
// server that serves them with /healthz and /readyz. Every daemon has its own
// registry (never the global default), so one process can run many daemons
// (tests, the fleet simulation). No label ever holds a secret: registry
// hosts, AWS service and operation names, error classes, API paths and HTTP
// codes only.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

// Error kinds of ecr_node_auth_errors_total.
const (
	KindECR       = "ecr"        // an ECR call failed (including getting AWS credentials for it)
	KindSTS       = "sts"        // an STS call failed
	KindAWS       = "aws"        // another AWS call failed
	KindHostsTOML = "hosts_toml" // a hosts.toml could not be written or removed
	KindSocket    = "socket"     // the socket API answered 500
)

// Source is what the token metrics are read from at scrape time.
type Source interface {
	// Entries is the auth map (tokens.Agent.Snapshot).
	Entries() []tokens.Entry
	// Rearms counts the token file watch re-arms since start.
	Rearms() int
}

// Metrics is one daemon's metrics.
type Metrics struct {
	reg *prometheus.Registry

	refreshes *prometheus.CounterVec
	errs      *prometheus.CounterVec
	awsCalls  *prometheus.CounterVec
	awsDur    *prometheus.HistogramVec
	sockReqs  *prometheus.CounterVec
	sockDur   *prometheus.HistogramVec

	// pre-resolved children of the socket metrics (the hot path)
	reqChild map[string]map[int]prometheus.Counter
	durChild map[string]prometheus.Observer

	mu          sync.Mutex
	lastAttempt map[string]time.Time // service -> last counted attempt
}

// SocketPaths are the path label values of the socket metrics.
var SocketPaths = []string{"/v1/credentials", "/v1/registries", "/v1/status", "/v1/health", "other"}

var socketCodes = []int{200, 400, 403, 404, 405, 413, 429, 500, 503}

// New registers every metric on a new registry; src feeds the token gauges.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecr_node_auth_refresh_total", Help: "ECR token refresh attempts by ECR service (partition/region) and result (success, failure).",
		}, []string{"service", "result"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecr_node_auth_errors_total", Help: "Errors by kind (ecr, sts, aws, hosts_toml, socket) and class (transient, throttled, permanent).",
		}, []string{"kind", "class"}),
		awsCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecr_node_auth_aws_calls_total", Help: "AWS API calls by api (Service:Operation) and result (success, transient, throttled, permanent).",
		}, []string{"api", "result"}),
		awsDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ecr_node_auth_aws_call_duration_seconds", Help: "AWS API call latency, SDK retries included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"api"}),
		sockReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecr_node_auth_socket_requests_total", Help: "Socket API requests by path and HTTP code.",
		}, []string{"path", "code"}),
		sockDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ecr_node_auth_socket_request_duration_seconds", Help: "Socket API request latency by path.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 200e-6, 500e-6, .001, .005, .025, .1, .5, 2.5, 10},
		}, []string{"path"}),
		reqChild:    map[string]map[int]prometheus.Counter{},
		durChild:    map[string]prometheus.Observer{},
		lastAttempt: map[string]time.Time{},
	}
	m.reg.MustRegister(m.refreshes, m.errs, m.awsCalls, m.awsDur, m.sockReqs, m.sockDur,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&tokenCollector{src: src},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ecr_node_auth_token_file_rearms_total", Help: "Token file watches re-armed after the directory was removed, renamed or replaced.",
		}, func() float64 { return float64(src.Rearms()) }),
	)
	for _, p := range SocketPaths {
		m.durChild[p] = m.sockDur.WithLabelValues(p)
		m.reqChild[p] = map[int]prometheus.Counter{}
		for _, c := range socketCodes {
			m.reqChild[p][c] = m.sockReqs.WithLabelValues(p, strconv.Itoa(c))
		}
	}
	return m
}

// Registry is the daemon's registry (for tests and /metrics).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveRequest implements api.Observer: two pre-resolved children, no
// allocation for the known paths and codes.
func (m *Metrics) ObserveRequest(path string, code int, d time.Duration) {
	byCode, ok := m.reqChild[path]
	if !ok {
		path, byCode = "other", m.reqChild["other"]
	}
	if c, ok := byCode[code]; ok {
		c.Inc()
	} else {
		m.sockReqs.WithLabelValues(path, strconv.Itoa(code)).Inc()
	}
	m.durChild[path].Observe(d.Seconds())
	if code == http.StatusInternalServerError {
		m.errs.WithLabelValues(KindSocket, "permanent").Inc()
	}
}

// Refreshed counts a refresh attempt once per service, from the agent's
// per-host OnChange calls.
func (m *Metrics) Refreshed(e tokens.Entry) {
	svc := e.Host.Service().String()
	m.mu.Lock()
	if prev, ok := m.lastAttempt[svc]; ok && !e.LastAttempt.After(prev) {
		m.mu.Unlock()
		return
	}
	m.lastAttempt[svc] = e.LastAttempt
	m.mu.Unlock()
	result := "success"
	if e.LastError != "" {
		result = "failure"
	}
	m.refreshes.WithLabelValues(svc, result).Inc()
}

// FileError counts a hosts.toml write or removal failure.
func (m *Metrics) FileError() { m.errs.WithLabelValues(KindHostsTOML, "permanent").Inc() }

// AWSMiddleware instruments every call of an SDK client at the SDK boundary:
// append it to aws.Config.APIOptions. The duration includes the SDK's own
// retries and getting credentials.
func (m *Metrics) AWSMiddleware() func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("ecrNodeAuthMetrics",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				start := time.Now()
				out, md, err := next.HandleInitialize(ctx, in)
				m.ObserveAWSCall(awsmiddleware.GetServiceID(ctx), awsmiddleware.GetOperationName(ctx), time.Since(start), err)
				return out, md, err
			}), middleware.After)
	}
}

// ObserveAWSCall records one AWS call.
func (m *Metrics) ObserveAWSCall(service, operation string, d time.Duration, err error) {
	api := service + ":" + operation
	result := "success"
	if err != nil {
		result = refresh.Classify(err).Class.String()
		kind := KindAWS
		switch strings.ToLower(service) {
		case "ecr":
			kind = KindECR
		case "sts":
			kind = KindSTS
		}
		m.errs.WithLabelValues(kind, result).Inc()
	}
	m.awsCalls.WithLabelValues(api, result).Inc()
	m.awsDur.WithLabelValues(api).Observe(d.Seconds())
}

// tokenCollector reads the auth map at scrape time, so a registry that left
// the map leaves the metrics too.
type tokenCollector struct{ src Source }

var (
	expiryDesc = prometheus.NewDesc("ecr_node_auth_token_expiry_seconds",
		"Seconds until the registry's token expires (negative: expired; absent: no token yet).", []string{"registry"}, nil)
	validDesc = prometheus.NewDesc("ecr_node_auth_token_valid",
		"1 if the registry holds a valid token (not near expiry), else 0.", []string{"registry"}, nil)
)

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- validDesc
}

func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, e := range c.src.Entries() {
		valid := 0.0
		if e.Credential.Valid(now) {
			valid = 1
		}
		ch <- prometheus.MustNewConstMetric(validDesc, prometheus.GaugeValue, valid, e.Host.Name)
		if e.Credential != nil {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, e.Credential.ExpiresAt.Sub(now).Seconds(), e.Host.Name)
		}
	}
}
