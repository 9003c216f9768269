// Command fnfunc is the function the tests of `fnrun serve` run: a static
// binary that speaks Fn's container contract (http-stream) with nothing but
// the standard library, built into a one-file image by test/env/up.sh.
//
// It listens where FN_LISTENER says (a socket of another name in the same
// folder, made writable by anyone and linked to FN_LISTENER, as Fn's FDKs
// do) and answers POST /call. By default it answers "hello " and the
// request body ("hello world" for an empty one). Request headers script
// the rest:
//
//	Fnfunc-Sleep: 2s      wait that long first
//	Fnfunc-Crash: 3       exit with that code mid-call, without answering
//	Fnfunc-Status: 502    answer with that status
//	Fnfunc-Env: 1         answer with the environment, as a JSON object
//	Fnfunc-Size: 1048576  answer with that many bytes
//
// Every answer carries Fnfunc-Instance (random, one per process: two calls
// with the same one ran in the same container), Fnfunc-Calls (the calls
// this process has served), Fnfunc-Call-Id and Fnfunc-Deadline (the Fn-
// headers it received).
//
// Configuration (the function's config, so its environment) scripts the
// start: FNFUNC_EXIT_AT_START=N exits with code N before listening,
// FNFUNC_START_DELAY=1s waits before listening.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fnfunc:", err)
		os.Exit(1)
	}
}

func run() error {
	if code := os.Getenv("FNFUNC_EXIT_AT_START"); code != "" {
		n, _ := strconv.Atoi(code)
		fmt.Fprintln(os.Stderr, "fnfunc: exiting at start as configured")
		os.Exit(n)
	}
	if d, err := time.ParseDuration(os.Getenv("FNFUNC_START_DELAY")); err == nil {
		time.Sleep(d)
	}
	if f := os.Getenv("FN_FORMAT"); f != "" && f != "http-stream" {
		return fmt.Errorf("FN_FORMAT %q: only http-stream is spoken", f)
	}
	addr, ok := strings.CutPrefix(os.Getenv("FN_LISTENER"), "unix:")
	if !ok || addr == "" {
		return fmt.Errorf("FN_LISTENER %q: want unix:/path", os.Getenv("FN_LISTENER"))
	}

	// Listen on a name of our own, open it to the agent, then link the
	// contract's name to it: the agent never sees a half-made socket.
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	instance := hex.EncodeToString(b)
	phony := filepath.Join(filepath.Dir(addr), "phony-"+instance+".sock")
	l, err := net.Listen("unix", phony)
	if err != nil {
		return err
	}
	if err := os.Chmod(phony, 0o666); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Base(phony), addr); err != nil {
		return err
	}
	defer os.Remove(addr)
	defer os.Remove(phony)

	var calls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		h := w.Header()
		h.Set("Fnfunc-Instance", instance)
		h.Set("Fnfunc-Calls", strconv.FormatInt(n, 10))
		h.Set("Fnfunc-Call-Id", r.Header.Get("Fn-Call-Id"))
		h.Set("Fnfunc-Deadline", r.Header.Get("Fn-Deadline"))
		if d, err := time.ParseDuration(r.Header.Get("Fnfunc-Sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if c := r.Header.Get("Fnfunc-Crash"); c != "" {
			code, _ := strconv.Atoi(c)
			fmt.Fprintf(os.Stderr, "fnfunc: crashing with code %d as asked\n", code)
			os.Exit(code)
		}
		status := http.StatusOK
		if s, err := strconv.Atoi(r.Header.Get("Fnfunc-Status")); err == nil {
			status = s
		}
		switch {
		case r.Header.Get("Fnfunc-Env") != "":
			env := map[string]string{}
			for _, kv := range os.Environ() {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
			h.Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(env)
		case r.Header.Get("Fnfunc-Size") != "":
			size, _ := strconv.Atoi(r.Header.Get("Fnfunc-Size"))
			h.Set("Content-Type", "application/octet-stream")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(strings.Repeat("x", size)))
		default:
			if len(body) == 0 {
				body = []byte("world")
			}
			h.Set("Content-Type", "text/plain")
			w.WriteHeader(status)
			_, _ = fmt.Fprintf(w, "hello %s", body)
		}
	})
	srv := &http.Server{Handler: mux}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	fmt.Fprintf(os.Stderr, "fnfunc: instance %s listening on %s\n", instance, addr)
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
