package fakeaws

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// inMemoryDomain names the services of an Options.InMemory fake ("http://ecr.fakeaws.invalid").
const inMemoryDomain = ".fakeaws.invalid"

// errConnectionClosed is what the in-memory transport returns for a dropped connection, as
// net/http does when the server closes without answering.
var errConnectionClosed = errors.New("fakeaws: connection closed by server without a response")

// Transport returns an http.RoundTripper that hands each request straight to the fake's
// service handler for the request's host (one of the service URLs): no socket, no
// goroutine of its own, so it runs inside a testing/synctest bubble. Dropped connections
// give an error, hung ones wait until the request's context ends.
func (f *Fake) Transport() http.RoundTripper { return transport{f} }

type transport struct{ f *Fake }

func (t transport) RoundTrip(r *http.Request) (resp *http.Response, err error) {
	var svc Service
	for s, u := range t.f.urls {
		if pu, perr := url.Parse(u); perr == nil && pu.Host == r.URL.Host {
			svc = s
		}
	}
	if svc == "" {
		return nil, fmt.Errorf("fakeaws: no fake service at %s", r.URL.Host)
	}
	// Like a server, the handler gets its own copy with a body it may read.
	in := r.Clone(r.Context())
	if r.Body != nil {
		body, rerr := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if rerr != nil {
			return nil, rerr
		}
		in.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		in.Body = http.NoBody
	}
	in.RequestURI = r.URL.RequestURI()
	if in.Host == "" {
		in.Host = r.URL.Host
	}
	w := &memResponse{header: http.Header{}}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			resp, err = nil, errConnectionClosed
		}
	}()
	t.f.serviceHandler(svc).ServeHTTP(w, in)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.header.Get("Date") == "" {
		// Date is what the SDK corrects its clock skew by: the signing clock.
		w.header.Set("Date", t.f.opts.SigV4Clock.Now().UTC().Format(http.TimeFormat))
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.header,
		Body:          io.NopCloser(bytes.NewReader(w.body.Bytes())),
		ContentLength: int64(w.body.Len()),
		Request:       r,
	}, nil
}

// memResponse is a ResponseWriter that is not a Hijacker: dropConnection aborts instead.
type memResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (m *memResponse) Header() http.Header { return m.header }

func (m *memResponse) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
	}
}

func (m *memResponse) Write(b []byte) (int, error) {
	m.WriteHeader(http.StatusOK)
	return m.body.Write(b)
}
