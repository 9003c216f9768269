package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/pool"
)

// Version is what GET /version answers.
const Version = "fnrun-serve 0.1.0"

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/apps", s.listApps)
	mux.HandleFunc("POST /v2/apps", s.createApp)
	mux.HandleFunc("GET /v2/apps/{appID}", s.getApp)
	mux.HandleFunc("PUT /v2/apps/{appID}", s.updateApp)
	mux.HandleFunc("DELETE /v2/apps/{appID}", s.deleteApp)

	mux.HandleFunc("GET /v2/fns", s.listFns)
	mux.HandleFunc("POST /v2/fns", s.createFn)
	mux.HandleFunc("GET /v2/fns/{fnID}", s.getFn)
	mux.HandleFunc("PUT /v2/fns/{fnID}", s.updateFn)
	mux.HandleFunc("DELETE /v2/fns/{fnID}", s.deleteFn)

	// Fn's CLI lists triggers while deploying; there are none here.
	mux.HandleFunc("GET /v2/triggers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"items": []any{}})
	})

	mux.HandleFunc("POST /invoke/{fnID}", s.invoke)
	mux.HandleFunc("/invoke/{fnID}", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errMethodNotAllowed)
	})

	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": Version})
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"goto": "https://fnproject.io", "hello": "world!"})
	})
	if s.mets.handler != nil {
		mux.Handle("GET /metrics", s.metricsHandler())
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errPathNotFound)
	})
	s.mux = mux
}

// metricsHandler records the container gauges, then lets the exporter
// answer.
func (s *Server) metricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := s.Stats()
		s.mets.containers(st.Idle, st.Busy, st.Starting)
		s.mets.handler.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"message":"internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// errorBody is Fn's error body.
type errorBody struct {
	Message string `json:"message"`
}

// writeError answers with err's status and Fn's error body. A 5xx is
// logged with its cause.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	api := asAPIError(err)
	switch {
	case api.Code == http.StatusServiceUnavailable:
		// Expected under overload: not worth a line per call.
		s.log.WithError(err).WithFields(logrus.Fields{"code": api.Code, "path": r.URL.Path}).Debug("request refused")
	case api.Code >= 500:
		s.log.WithError(err).WithFields(logrus.Fields{"code": api.Code, "path": r.URL.Path}).Warn("request failed")
	}
	if errors.Is(api, ErrTooBusy) || errors.Is(api, ErrClosed) {
		w.Header().Set("Retry-After", strconv.Itoa(int((s.opts.retryAfter+time.Second-1)/time.Second)))
	}
	if api.Code == errClientCancel.Code {
		// Nobody reads it: the client is gone.
		w.WriteHeader(api.Code)
		return
	}
	writeJSON(w, api.Code, errorBody{Message: api.Message})
}

// readJSON decodes the request body into v, at most maxBody bytes.
func readJSON(r *http.Request, v any, maxBody int64) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return errInvalidJSON.WithCause(err)
	}
	if int64(len(body)) > maxBody {
		return errRequestTooBig
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return errInvalidJSON.WithCause(err)
	}
	return nil
}

const maxAPIBody = 1 << 20

func perPage(r *http.Request) (int, error) {
	v := r.URL.Query().Get("per_page")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errInvalidPerPage
	}
	return n, nil
}

// ---- apps ----

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var app App
	if err := readJSON(r, &app, maxAPIBody); err != nil {
		s.writeError(w, r, err)
		return
	}
	if app.ID != "" {
		s.writeError(w, r, errAppIDProvided)
		return
	}
	if err := app.validate(); err != nil {
		s.writeError(w, r, err)
		return
	}
	now := time.Now()
	app.ID = newID()
	app.CreatedAt, app.UpdatedAt = DateTime(now), DateTime(now)
	if app.Config == nil {
		app.Config = map[string]string{}
	}
	created, err := s.store.CreateApp(r.Context(), &app)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.WithFields(logrus.Fields{"app_id": created.ID, "app": created.Name}).Info("app created")
	writeJSON(w, http.StatusOK, created)
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	app, err := s.store.GetApp(r.Context(), r.PathValue("appID"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, app)
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	n, err := perPage(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	apps, next, err := s.store.ListApps(r.Context(), ListFilter{Name: q.Get("name"), Cursor: q.Get("cursor"), PerPage: n})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if apps == nil {
		apps = []*App{}
	}
	writeJSON(w, http.StatusOK, struct {
		NextCursor string `json:"next_cursor,omitempty"`
		Items      []*App `json:"items"`
	}{next, apps})
}

func (s *Server) updateApp(w http.ResponseWriter, r *http.Request) {
	var patch App
	if err := readJSON(r, &patch, maxAPIBody); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("appID")
	if patch.ID != "" && patch.ID != id {
		s.writeError(w, r, errAppsIDMismatch)
		return
	}
	app, err := s.store.UpdateApp(r.Context(), id, &patch)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The app's config is part of its functions' containers.
	s.forgetApp(r, id)
	writeJSON(w, http.StatusOK, app)
}

func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("appID")
	// The functions go with the app: forget their containers first.
	s.forgetApp(r, id)
	if err := s.store.DeleteApp(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.WithField("app_id", id).Info("app deleted")
	w.WriteHeader(http.StatusNoContent)
}

// forgetApp retires the containers of every function of app id.
func (s *Server) forgetApp(r *http.Request, id string) {
	cursor := ""
	for {
		fns, next, err := s.store.ListFns(r.Context(), ListFilter{AppID: id, Cursor: cursor, PerPage: maxPerPage})
		if err != nil {
			return
		}
		for _, f := range fns {
			s.agent.forget(f.ID)
		}
		if next == "" {
			return
		}
		cursor = next
	}
}

// ---- functions ----

// withEndpoint adds the invoke endpoint annotation, as Fn's server does.
func withEndpoint(r *http.Request, fn *Fn) *Fn {
	if fn.Annotations == nil {
		fn.Annotations = map[string]json.RawMessage{}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u, _ := json.Marshal(fmt.Sprintf("%s://%s/invoke/%s", scheme, r.Host, fn.ID))
	fn.Annotations[InvokeEndpointAnnotation] = u
	return fn
}

func (s *Server) createFn(w http.ResponseWriter, r *http.Request) {
	var fn Fn
	if err := readJSON(r, &fn, maxAPIBody); err != nil {
		s.writeError(w, r, err)
		return
	}
	if fn.ID != "" {
		s.writeError(w, r, errFnsIDProvided)
		return
	}
	delete(fn.Annotations, InvokeEndpointAnnotation)
	if fn.AppID == "" {
		s.writeError(w, r, errFnsMissingAppID)
		return
	}
	fn.setDefaults(time.Now())
	if err := fn.validate(); err != nil {
		s.writeError(w, r, err)
		return
	}
	fn.ID = newID()
	created, err := s.store.CreateFn(r.Context(), &fn)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.WithFields(logrus.Fields{"fn_id": created.ID, "fn": created.Name, "app_id": created.AppID, "image": created.Image}).Info("function created")
	writeJSON(w, http.StatusOK, withEndpoint(r, created))
}

func (s *Server) getFn(w http.ResponseWriter, r *http.Request) {
	fn, err := s.store.GetFn(r.Context(), r.PathValue("fnID"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, withEndpoint(r, fn))
}

func (s *Server) listFns(w http.ResponseWriter, r *http.Request) {
	n, err := perPage(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	fns, next, err := s.store.ListFns(r.Context(), ListFilter{AppID: q.Get("app_id"), Name: q.Get("name"), Cursor: q.Get("cursor"), PerPage: n})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if fns == nil {
		fns = []*Fn{}
	}
	for _, f := range fns {
		withEndpoint(r, f)
	}
	writeJSON(w, http.StatusOK, struct {
		NextCursor string `json:"next_cursor,omitempty"`
		Items      []*Fn  `json:"items"`
	}{next, fns})
}

func (s *Server) updateFn(w http.ResponseWriter, r *http.Request) {
	var patch Fn
	if err := readJSON(r, &patch, maxAPIBody); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("fnID")
	if patch.ID != "" && patch.ID != id {
		s.writeError(w, r, errFnsIDMismatch)
		return
	}
	delete(patch.Annotations, InvokeEndpointAnnotation)
	fn, err := s.store.UpdateFn(r.Context(), id, &patch)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.agent.forget(id)
	writeJSON(w, http.StatusOK, withEndpoint(r, fn))
}

func (s *Server) deleteFn(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("fnID")
	if err := s.store.DeleteFn(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.agent.forget(id)
	s.log.WithField("fn_id", id).Info("function deleted")
	w.WriteHeader(http.StatusNoContent)
}

// ---- invoke ----

// Response headers of an invocation besides the function's own.
const (
	// HeaderCallID is the call's id, as Fn answers it.
	HeaderCallID = "Fn-Call-Id"
	// HeaderStart says whether the call ran in a container started for it
	// (cold) or in one that already ran (hot).
	HeaderStart = "Fnrun-Start"
)

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	begin := time.Now()
	if !s.enter() {
		s.writeError(w, r, errShuttingDown)
		return
	}
	defer s.inflight.Done()

	fnID := r.PathValue("fnID")
	var (
		app   *App
		fn    *Fn
		start string
		code  = http.StatusOK
	)
	err := func() error {
		var err error
		if fn, err = s.store.GetFn(r.Context(), fnID); err != nil {
			return err
		}
		if app, err = s.store.GetApp(r.Context(), fn.AppID); err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, s.opts.maxRequest+1))
		if err != nil {
			return errClientCancel.WithCause(err)
		}
		if int64(len(body)) > s.opts.maxRequest {
			return errRequestTooBig
		}
		spec, err := s.agent.newSpec(app, fn)
		if err != nil {
			return err
		}
		inv := &invocation{callID: newID(), body: body, header: r.Header}
		w.Header().Set(HeaderCallID, inv.callID)
		res, st, err := s.agent.call(r.Context(), spec, inv)
		start = st
		if st != "" {
			w.Header().Set(HeaderStart, st)
		}
		if err != nil {
			return err
		}
		h := w.Header()
		for k, vs := range res.header {
			if !strings.EqualFold(k, HeaderCallID) {
				h[k] = vs
			}
		}
		h.Set("Content-Length", strconv.Itoa(len(res.body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(res.body)
		return nil
	}()
	if err != nil {
		code = asAPIError(err).Code
		s.writeError(w, r, err)
	}
	if fn != nil {
		appName := ""
		if app != nil {
			appName = app.Name
		}
		s.mets.call(appName, fn.Name, fn.ID, start, code, err, time.Since(begin))
	}
	if s.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithFields(logrus.Fields{"fn_id": fnID, "code": code, "start": start, "ms": time.Since(begin).Milliseconds()}).Debug("call")
	}
}

// ---- health ----

type healthBody struct {
	Status  string      `json:"status"`
	Driver  string      `json:"driver"`
	Stats   Stats       `json:"containers"`
	Pool    *poolHealth `json:"pool,omitempty"`
	Cleaner *bool       `json:"image_cleaner,omitempty"`
}

// poolHealth is pool.Stats with JSON names.
type poolHealth struct {
	Free         int    `json:"free"`
	Leased       int    `json:"leased"`
	Starting     int    `json:"starting"`
	Size         int    `json:"size"`
	Misses       uint64 `json:"misses"`
	Replacements uint64 `json:"replacements"`
	Deaths       uint64 `json:"deaths"`
	Failures     uint64 `json:"failures"`
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	b := healthBody{Status: "ok", Driver: s.opts.driverName, Stats: s.Stats()}
	if rep, ok := s.drv.(pool.Reporter); ok {
		if st, ok := rep.PoolStats(); ok {
			b.Pool = &poolHealth{st.Free, st.Leased, st.Starting, st.Size, st.Misses, st.Replacements, st.Deaths, st.Failures}
		}
	}
	if p, ok := s.drv.(images.Provider); ok {
		_, running := p.ImageCleaner()
		b.Cleaner = &running
	}
	code := http.StatusOK
	s.mu.Lock()
	if s.draining {
		b.Status, code = "shutting down", http.StatusServiceUnavailable
	}
	s.mu.Unlock()
	writeJSON(w, code, b)
}
