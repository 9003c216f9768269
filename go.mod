module github.com/fnrun/fnrun

go 1.26.8

require (
	github.com/distribution/reference v0.6.0
	github.com/sirupsen/logrus v1.10.2
	go.opencensus.io v0.24.0
)

require (
	github.com/golang/groupcache v0.0.0-20241129210726-2c02b8208cf8 // indirect
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
