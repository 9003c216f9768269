package mock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/mock"
)

func newTask(id string, ext map[string]string) *drivers.Task {
	return &drivers.Task{ID: id, ImageRef: "busybox", Ext: ext}
}

func TestRegisteredAsMock(t *testing.T) {
	drv, err := drivers.New("mock", drivers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	if _, ok := drv.(*mock.Driver); !ok {
		t.Fatalf("New(mock) gave %T", drv)
	}
}

func TestPullRetries(t *testing.T) {
	always := func(error) (bool, string) { return true, "transient" }
	for _, tc := range []struct {
		name      string
		ext       map[string]string
		policy    drivers.BackOffConfig
		wantErr   error
		wantPulls int
	}{
		{"fails twice then succeeds", map[string]string{mock.ExtPullFailures: "2"},
			drivers.BackOffConfig{MaxRetries: 3, Interval: 1, MaxDelay: 2}, nil, 3},
		{"retries used up", map[string]string{mock.ExtPullFailures: "5"},
			drivers.BackOffConfig{MaxRetries: 2, Interval: 1, MaxDelay: 2}, errors.New("any"), 3},
		{"no policy, no retry", map[string]string{mock.ExtPullFailures: "1"},
			drivers.BackOffConfig{}, errors.New("any"), 1},
		{"missing image is final", map[string]string{mock.ExtImageMissing: "true"},
			drivers.BackOffConfig{MaxRetries: 3, Interval: 1, MaxDelay: 2}, drivers.ErrImageNotFound, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := mock.New(drivers.Config{})
			if err := d.SetPullImageRetryPolicy(tc.policy, always); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			c, err := d.CreateCookie(ctx, newTask("pull", tc.ext))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			err = c.PullImage(ctx)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("PullImage: %v", err)
			case tc.wantErr != nil && err == nil:
				t.Fatal("PullImage succeeded")
			case errors.Is(tc.wantErr, drivers.ErrImageNotFound) && !errors.Is(err, drivers.ErrImageNotFound):
				t.Fatalf("PullImage: %v, want ErrImageNotFound", err)
			}
			if d.Pulls() != tc.wantPulls {
				t.Fatalf("%d pull attempts, want %d", d.Pulls(), tc.wantPulls)
			}
		})
	}
}

func TestBadRetryPolicyRejected(t *testing.T) {
	d, _ := mock.New(drivers.Config{})
	err := d.SetPullImageRetryPolicy(drivers.BackOffConfig{MaxRetries: 1}, nil)
	if !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Fatalf("got %v, want ErrInvalidConfig", err)
	}
}

func TestPullHonoursContext(t *testing.T) {
	d, _ := mock.New(drivers.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	c, _ := d.CreateCookie(ctx, newTask("slow", map[string]string{mock.ExtPullDelay: "1h"}))
	defer c.Close(context.Background())
	if err := c.PullImage(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PullImage = %v, want deadline exceeded", err)
	}
}

func TestCreateError(t *testing.T) {
	d, _ := mock.New(drivers.Config{}, mock.WithImages("busybox"))
	ctx := context.Background()
	c, _ := d.CreateCookie(ctx, newTask("create", map[string]string{mock.ExtCreateError: "no space left"}))
	defer c.Close(ctx)
	if err := c.CreateContainer(ctx); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("CreateContainer = %v", err)
	}
	if _, err := c.Run(ctx); err == nil {
		t.Fatal("Run without a container succeeded")
	}
}

func TestCreateNeedsImage(t *testing.T) {
	d, _ := mock.New(drivers.Config{})
	ctx := context.Background()
	c, _ := d.CreateCookie(ctx, newTask("noimage", nil))
	defer c.Close(ctx)
	if err := c.CreateContainer(ctx); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Fatalf("CreateContainer before pull = %v, want ErrImageNotFound", err)
	}
}

func TestFreezeNeedsRunningContainer(t *testing.T) {
	d, _ := mock.New(drivers.Config{}, mock.WithImages("busybox"))
	ctx := context.Background()
	c, _ := d.CreateCookie(ctx, newTask("freeze", nil))
	defer c.Close(ctx)
	if err := c.Freeze(ctx); err == nil {
		t.Fatal("Freeze of a container that is not running succeeded")
	}
}

func TestCookieTracking(t *testing.T) {
	d, _ := mock.New(drivers.Config{}, mock.WithImages("busybox"))
	ctx := context.Background()
	c1, _ := d.CreateCookie(ctx, newTask("a", nil))
	c2, _ := d.CreateCookie(ctx, newTask("b", nil))
	if d.OpenCookies() != 2 || d.CreatedCookies() != 2 {
		t.Fatalf("open %d created %d", d.OpenCookies(), d.CreatedCookies())
	}
	_ = c1.Close(ctx)
	_ = c1.Close(ctx)
	if d.OpenCookies() != 1 {
		t.Fatalf("open %d after one close", d.OpenCookies())
	}
	_ = c2.Close(ctx)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateCookie(ctx, newTask("c", nil)); !errors.Is(err, drivers.ErrClosed) {
		t.Fatalf("CreateCookie after Close = %v, want ErrClosed", err)
	}
	if _, err := c2.Run(ctx); !errors.Is(err, drivers.ErrClosed) {
		t.Fatalf("Run of a closed cookie = %v, want ErrClosed", err)
	}
}

func TestDriverCloseEndsOpenCookies(t *testing.T) {
	d, _ := mock.New(drivers.Config{}, mock.WithImages("busybox"))
	ctx := context.Background()
	c, _ := d.CreateCookie(ctx, newTask("hang", map[string]string{mock.ExtHang: "true"}))
	_ = c.CreateContainer(ctx)
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusCancelled {
		t.Fatalf("status %s after driver Close, want cancelled", res.Status())
	}
	if d.OpenCookies() != 0 {
		t.Fatalf("%d cookies open after driver Close", d.OpenCookies())
	}
}

func TestDelayAndSlotKey(t *testing.T) {
	d, _ := mock.New(drivers.Config{}, mock.WithImages("busybox"))
	ctx := context.Background()
	c, _ := d.CreateCookie(ctx, newTask("delay", map[string]string{mock.ExtDelay: "200ms"}))
	defer c.Close(ctx)
	_ = c.CreateContainer(ctx)
	start := time.Now()
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %s", res.Status())
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("run took %v, want at least the scripted 200ms", took)
	}
	key := d.GetSlotKeyExtensions(map[string]string{"mock.exit_code": "1", "other": "x", "mock.delay": "1s"})
	if key != "mock.delay=1s;mock.exit_code=1" {
		t.Fatalf("slot key %q", key)
	}
}
