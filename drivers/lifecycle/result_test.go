package lifecycle

import (
	"context"
	"errors"
	"testing"

	"github.com/fnrun/fnrun/drivers"
)

func TestContextResult(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := contextResult(ctx); r.Status() != drivers.StatusCancelled || !errors.Is(r.Error(), context.Canceled) {
		t.Errorf("cancelled: %s %v", r.Status(), r.Error())
	}
	ctx, cancel = context.WithTimeout(context.Background(), 0)
	defer cancel()
	if r := contextResult(ctx); r.Status() != drivers.StatusTimeout || !errors.Is(r.Error(), context.DeadlineExceeded) {
		t.Errorf("timeout: %s %v", r.Status(), r.Error())
	}
}
