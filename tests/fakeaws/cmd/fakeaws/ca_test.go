package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
)

func clientWithCA(pem []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}
