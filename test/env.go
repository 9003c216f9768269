package test

import (
	"os"
	"testing"
)

// Env returns the values of the named environment variables that
// test/env/up.sh writes (FNRUN_DOCKER_HOST, FNRUN_CONTAINERD_ADDRESS, ...).
//
// When one is missing, or the tests run with -short, an integration test
// cannot run: with CI=true that fails the test, because CI promises the
// real daemons; otherwise the test is skipped and says how to get them.
func Env(t testing.TB, names ...string) map[string]string {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if testing.Short() && !ci {
		t.Skip("integration test skipped in -short mode")
	}
	vals := make(map[string]string, len(names))
	var missing []string
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			missing = append(missing, n)
		}
		vals[n] = v
	}
	if len(missing) > 0 {
		const how = "run `make up` and load its environment (set -a; . /var/tmp/fnrun-env/env), or use `make test`"
		if ci {
			t.Fatalf("CI=true but the real test environment is missing %v: %s", missing, how)
		}
		t.Skipf("real test environment missing %v: %s", missing, how)
	}
	return vals
}
