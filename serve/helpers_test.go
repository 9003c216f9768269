package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
)

// testClient is the tests' HTTP client; its idle connections are closed
// before the leak check.
var testClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func TestMain(m *testing.M) {
	code := m.Run()
	testClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// harness is a Server behind an httptest server.
type harness struct {
	t    testing.TB
	srv  *Server
	http *httptest.Server
	drv  drivers.Driver
	url  string
}

// newHarness starts a server over drv and store; everything is closed at
// the end of the test, the server before the driver.
func newHarness(t testing.TB, drv drivers.Driver, store Store, opts ...Option) *harness {
	t.Helper()
	if store == nil {
		store = NewMemoryStore()
	}
	tw := &testWriter{t: t}
	l := logrus.New()
	l.Out = tw
	l.SetLevel(logrus.DebugLevel)
	if os.Getenv("FNRUN_SERVE_TEST_QUIET") != "" {
		l.SetLevel(logrus.WarnLevel)
	}
	dir, err := os.MkdirTemp("", "fns")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts = append([]Option{WithLogger(logrus.NewEntry(l)), WithSocketDir(dir)}, opts...)
	srv, err := New(drv, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	h := &harness{t: t, srv: srv, http: hs, drv: drv, url: hs.URL}
	t.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("server Close: %v", err)
		}
		if st := srv.Stats(); st.Containers != 0 {
			t.Errorf("containers left after Close: %+v", st)
		}
		tw.mu.Lock()
		tw.done = true
		tw.mu.Unlock()
	})
	return h
}

// reply is an HTTP answer.
type reply struct {
	code   int
	header http.Header
	body   string
}

func (r reply) message() string {
	var e errorBody
	_ = json.Unmarshal([]byte(r.body), &e)
	return e.Message
}

func (h *harness) do(method, path, body string, header map[string]string) reply {
	h.t.Helper()
	return doHTTP(h.t, method, h.url+path, body, header)
}

func doHTTP(t testing.TB, method, url, body string, header map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return reply{body: err.Error()}
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		// Errorf, not Fatalf: this may run outside the test's goroutine.
		t.Errorf("%s %s: %v", method, url, err)
		return reply{body: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (h *harness) mustJSON(method, path string, in any, out any) {
	h.t.Helper()
	b, _ := json.Marshal(in)
	r := h.do(method, path, string(b), nil)
	if r.code != http.StatusOK {
		h.t.Fatalf("%s %s: %d %s", method, path, r.code, r.body)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(r.body), out); err != nil {
			h.t.Fatalf("%s %s: %v in %s", method, path, err, r.body)
		}
	}
}

// deploy creates an app (once per name) and a function in it, and returns
// the function.
func (h *harness) deploy(appName string, fn Fn) *Fn {
	h.t.Helper()
	var list struct{ Items []*App }
	r := h.do("GET", "/v2/apps?name="+appName, "", nil)
	_ = json.Unmarshal([]byte(r.body), &list)
	var app App
	if len(list.Items) == 1 {
		app = *list.Items[0]
	} else {
		h.mustJSON("POST", "/v2/apps", App{Name: appName}, &app)
	}
	fn.AppID = app.ID
	var out Fn
	h.mustJSON("POST", "/v2/fns", fn, &out)
	return &out
}

func (h *harness) invoke(fnID, body string, header map[string]string) reply {
	h.t.Helper()
	return h.do("POST", "/invoke/"+fnID, body, header)
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// parallel runs f n times at once and returns the replies.
func parallel(n int, f func(i int) reply) []reply {
	out := make([]reply, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = f(i)
		}()
	}
	wg.Wait()
	return out
}

func jsonBody(v any) string {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(v)
	return b.String()
}
