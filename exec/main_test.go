package exec_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a command starts must end by the time Wait returns and
// the drivers are closed.
func TestMain(m *testing.M) {
	// OpenCensus starts its view worker at init, for the whole process.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}
