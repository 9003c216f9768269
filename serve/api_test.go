package serve

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newAPIHarness(t *testing.T) *harness {
	drv, err := newFakeDriver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	return newHarness(t, drv, nil)
}

// TestAppsAPI checks /v2/apps against Fn's status codes and error bodies.
func TestAppsAPI(t *testing.T) {
	h := newAPIHarness(t)
	var app App
	h.mustJSON("POST", "/v2/apps", map[string]any{"name": "a1", "config": map[string]string{"K": "v"}}, &app)
	if app.ID == "" || app.Name != "a1" || app.Config["K"] != "v" || app.CreatedAt.IsZero() {
		t.Fatalf("created app: %+v", app)
	}
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"empty body", "POST", "/v2/apps", ``, 400, "Invalid JSON"},
		{"bad json", "POST", "/v2/apps", `{"name":`, 400, "Invalid JSON"},
		{"missing name", "POST", "/v2/apps", `{}`, 400, "Missing app name"},
		{"invalid name", "POST", "/v2/apps", `{"name":"a b"}`, 400, "Invalid app name"},
		{"too long name", "POST", "/v2/apps", `{"name":"` + strings.Repeat("a", 256) + `"}`, 400, "App name must be 255 characters or less"},
		{"id provided", "POST", "/v2/apps", `{"name":"x","id":"abc"}`, 400, "App ID cannot be supplied on create"},
		{"duplicate", "POST", "/v2/apps", `{"name":"a1"}`, 409, "App already exists"},
		{"bad syslog", "POST", "/v2/apps", `{"name":"s","syslog_url":"ftp://x"}`, 400, ""},
		{"bad annotation", "POST", "/v2/apps", `{"name":"s","annotations":{"k":""}}`, 400, ""},
		{"get missing", "GET", "/v2/apps/nope", ``, 404, "App not found"},
		{"update missing", "PUT", "/v2/apps/nope", `{}`, 404, "App not found"},
		{"update id mismatch", "PUT", "/v2/apps/" + app.ID, `{"id":"other"}`, 400, "App ID in path does not match ID in body"},
		{"rename", "PUT", "/v2/apps/" + app.ID, `{"name":"a2"}`, 409, "Could not update - name is immutable"},
		{"delete missing", "DELETE", "/v2/apps/nope", ``, 404, "App not found"},
		{"bad cursor", "GET", "/v2/apps?cursor=%25%25", ``, 400, "Invalid cursor"},
		{"bad per_page", "GET", "/v2/apps?per_page=x", ``, 400, "Invalid per_page"},
		{"unknown path", "GET", "/v3/nothing", ``, 404, "Path not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.method, tc.path, tc.body, nil)
			if r.code != tc.code || (tc.msg != "" && r.message() != tc.msg) {
				t.Fatalf("want %d %q, got %d %s", tc.code, tc.msg, r.code, r.body)
			}
			if r.message() == "" {
				t.Fatalf("error body without a message: %s", r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
		})
	}

	// Update merges config; an empty value removes a key.
	var upd App
	h.mustJSON("PUT", "/v2/apps/"+app.ID, map[string]any{"config": map[string]string{"K": "", "N": "1"}}, &upd)
	if _, ok := upd.Config["K"]; ok || upd.Config["N"] != "1" || time.Time(upd.UpdatedAt).Before(time.Time(app.UpdatedAt)) {
		t.Fatalf("updated app: %+v", upd)
	}
	var got App
	h.mustJSON("GET", "/v2/apps/"+app.ID, nil, &got)
	if got.Config["N"] != "1" {
		t.Fatalf("get after update: %+v", got)
	}

	// Listing: sorted by name, paged with Fn's cursors, filtered by name.
	for _, n := range []string{"c", "b", "d"} {
		h.mustJSON("POST", "/v2/apps", App{Name: n}, nil)
	}
	var page struct {
		NextCursor string `json:"next_cursor"`
		Items      []*App `json:"items"`
	}
	h.mustJSON("GET", "/v2/apps?per_page=2", nil, &page)
	if len(page.Items) != 2 || page.Items[0].Name != "a1" || page.Items[1].Name != "b" ||
		page.NextCursor != base64.RawURLEncoding.EncodeToString([]byte("b")) {
		t.Fatalf("first page: %+v", page)
	}
	h.mustJSON("GET", "/v2/apps?per_page=2&cursor="+page.NextCursor, nil, &page)
	if len(page.Items) != 2 || page.Items[0].Name != "c" || page.Items[1].Name != "d" {
		t.Fatalf("second page: %+v", page)
	}
	page.NextCursor = ""
	h.mustJSON("GET", "/v2/apps?name=c", nil, &page)
	if len(page.Items) != 1 || page.Items[0].Name != "c" || page.NextCursor != "" {
		t.Fatalf("by name: %+v", page)
	}

	// Deleting an app deletes its functions.
	fn := h.deploy("c", Fn{Name: "f", Image: "example.com/f"})
	if r := h.do("DELETE", "/v2/apps/"+fn.AppID, "", nil); r.code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	if r := h.do("GET", "/v2/fns/"+fn.ID, "", nil); r.code != 404 || r.message() != "Fn not found" {
		t.Fatalf("fn after its app was deleted: %d %s", r.code, r.body)
	}
}

// TestFnsAPI checks /v2/fns against Fn's status codes, defaults and error
// bodies.
func TestFnsAPI(t *testing.T) {
	h := newAPIHarness(t)
	var app App
	h.mustJSON("POST", "/v2/apps", App{Name: "app"}, &app)
	var fn Fn
	h.mustJSON("POST", "/v2/fns", map[string]any{"app_id": app.ID, "name": "f", "image": "example.com/f:1"}, &fn)
	if fn.Memory != 128 || fn.Timeout != 30 || fn.IdleTimeout != 30 || fn.ID == "" {
		t.Fatalf("defaults: %+v", fn)
	}
	var endpoint string
	_ = json.Unmarshal(fn.Annotations[InvokeEndpointAnnotation], &endpoint)
	if endpoint != h.url+"/invoke/"+fn.ID {
		t.Fatalf("invoke endpoint annotation %q", endpoint)
	}
	appID := app.ID
	body := func(extra string) string {
		return `{"app_id":"` + appID + `","name":"g","image":"example.com/g"` + extra + `}`
	}
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"empty", "POST", "/v2/fns", ``, 400, "Invalid JSON"},
		{"no app", "POST", "/v2/fns", `{}`, 400, "Missing AppID on Fn"},
		{"no name", "POST", "/v2/fns", `{"app_id":"` + appID + `"}`, 400, "Missing Fn name"},
		{"no image", "POST", "/v2/fns", `{"app_id":"` + appID + `","name":"g"}`, 400, "Missing image on Fn"},
		{"bad name", "POST", "/v2/fns", `{"app_id":"` + appID + `","name":" ","image":"x"}`, 400, "name must be a valid string"},
		{"bad image", "POST", "/v2/fns", `{"app_id":"` + appID + `","name":"g","image":"UPPER::x"}`, 400, "Invalid image on Fn"},
		{"timeout", "POST", "/v2/fns", body(`,"timeout":301`), 400, "timeout value is out of range, must be between 0 and 300"},
		{"idle", "POST", "/v2/fns", body(`,"idle_timeout":3601`), 400, "idle_timeout value is out of range, must be between 0 and 3600"},
		{"memory", "POST", "/v2/fns", body(`,"memory":100000000`), 400, "memory value is out of range. It should be between 0 and 8192"},
		{"bad config", "POST", "/v2/fns", body(`,"config":{"A=B":"c"}`), 400, ""},
		{"bad extensions", "POST", "/v2/fns", body(`,"annotations":{"fnrun.io/extensions":[1]}`), 400, ""},
		{"id provided", "POST", "/v2/fns", body(`,"id":"x"`), 400, "ID cannot be provided for Fn creation"},
		{"missing app", "POST", "/v2/fns", `{"app_id":"nope","name":"g","image":"x"}`, 404, "App not found"},
		{"duplicate", "POST", "/v2/fns", `{"app_id":"` + appID + `","name":"f","image":"x"}`, 409, "Fn with specified name already exists"},
		{"get missing", "GET", "/v2/fns/nope", ``, 404, "Fn not found"},
		{"list without app", "GET", "/v2/fns", ``, 400, "Missing AppID on Fn"},
		{"update missing", "PUT", "/v2/fns/nope", `{}`, 404, "Fn not found"},
		{"update mismatch", "PUT", "/v2/fns/" + fn.ID, `{"id":"nottheid"}`, 400, "Fn ID in path does not match that in body"},
		{"rename", "PUT", "/v2/fns/" + fn.ID, `{"name":"other"}`, 409, "Could not update - name is immutable"},
		{"update timeout", "PUT", "/v2/fns/" + fn.ID, `{"timeout":3601}`, 400, "timeout value is out of range, must be between 0 and 300"},
		{"update memory", "PUT", "/v2/fns/" + fn.ID, `{"memory":100000000000000}`, 400, "memory value is out of range. It should be between 0 and 8192"},
		{"delete missing", "DELETE", "/v2/fns/nope", ``, 404, "Fn not found"},
		{"invoke missing", "POST", "/invoke/nope", ``, 404, "Fn not found"},
		{"invoke with GET", "GET", "/invoke/" + fn.ID, ``, 405, "Method not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.method, tc.path, tc.body, nil)
			if r.code != tc.code || (tc.msg != "" && r.message() != tc.msg) || r.message() == "" {
				t.Fatalf("want %d %q, got %d %s", tc.code, tc.msg, r.code, r.body)
			}
		})
	}

	var upd Fn
	h.mustJSON("PUT", "/v2/fns/"+fn.ID, map[string]any{"image": "example.com/f:2", "memory": 256, "config": map[string]string{"A": "1"}}, &upd)
	if upd.Image != "example.com/f:2" || upd.Memory != 256 || upd.Timeout != 30 || upd.Config["A"] != "1" {
		t.Fatalf("updated fn: %+v", upd)
	}
	var list struct {
		Items []*Fn `json:"items"`
	}
	h.mustJSON("GET", "/v2/fns?app_id="+app.ID+"&name=f", nil, &list)
	if len(list.Items) != 1 || list.Items[0].ID != fn.ID || list.Items[0].Annotations[InvokeEndpointAnnotation] == nil {
		t.Fatalf("list: %+v", list)
	}
	if r := h.do("DELETE", "/v2/fns/"+fn.ID, "", nil); r.code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	h.mustJSON("GET", "/v2/fns?app_id="+app.ID, nil, &list)
	if len(list.Items) != 0 {
		t.Fatalf("list after delete: %+v", list)
	}
	var v map[string]string
	h.mustJSON("GET", "/version", nil, &v)
	if v["version"] == "" {
		t.Fatal("no version")
	}
}

// TestStoreKeepsAppsAcrossReopen: the bbolt store gives back what it was
// given after a close, and only one process holds the file.
func TestStoreKeepsAppsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fn.db")
	s, err := OpenStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	app, err := s.CreateApp(ctx, &App{ID: newID(), Name: "kept", Config: map[string]string{"A": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	fn := &Fn{ID: newID(), Name: "f", AppID: app.ID, Image: "example.com/f"}
	fn.setDefaults(time.Now())
	if _, err := s.CreateFn(ctx, fn); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(path, 100*time.Millisecond); err == nil {
		t.Fatal("a second open of a held store succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetFn(ctx, fn.ID)
	if err != nil || got.Name != "f" || got.Timeout != 30 || got.AppID != app.ID {
		t.Fatalf("fn after reopen: %+v, %v", got, err)
	}
	if _, err := s.GetApp(ctx, "missing"); !errors.Is(err, ErrNotFound) || !errors.Is(err, errAppsNotFound) {
		t.Fatalf("missing app: %v", err)
	}
	if _, err := s.CreateApp(ctx, &App{ID: newID(), Name: "kept"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate app after reopen: %v", err)
	}
}

func TestIDsAndTimes(t *testing.T) {
	a := newID()
	time.Sleep(2 * time.Millisecond)
	b := newID()
	if len(a) != 26 || len(b) != 26 || a >= b {
		t.Fatalf("ids %s, %s: want 26 characters, sorted by time", a, b)
	}
	d := DateTime(time.Date(2024, 1, 2, 3, 4, 5, 6e6, time.UTC))
	j, _ := json.Marshal(d)
	if string(j) != `"2024-01-02T03:04:05.006Z"` {
		t.Fatalf("DateTime JSON %s", j)
	}
	var back DateTime
	if err := json.Unmarshal(j, &back); err != nil || !time.Time(back).Equal(time.Time(d)) {
		t.Fatalf("round trip: %v %v", back, err)
	}
}
