// Command fnrun runs function calls in containers through fnrun's drivers
// (docker, containerd, mock), and inspects and maintains what they manage.
//
// Usage:
//
//	fnrun run [flags] IMAGE [-- COMMAND [ARG...]]   run one call; exit with its exit code
//	fnrun ps [--driver D | --all]                   containers fnrun manages
//	fnrun kill [--driver D] ID...                   end and remove managed containers
//	fnrun images [--driver D]                       images with size, last use, busy, exempt
//	fnrun images clean --max-size SIZE [--dry-run] [--exempt REF]... [--watch INTERVAL]
//	fnrun pool [--driver D] [--size N]              start a pre-fork pool and print its figures
//	fnrun doctor                                    check daemons, cgroups, registry and CNI
//	fnrun bench [--driver D | --all] [--n N] [--concurrency C] [--quick] [--png FILE]
//	fnrun serve [--driver D] [--addr HOST:PORT]      an invocation agent speaking Fn's API
//
// In fnrun run, -v is --verbose (status, per-step timings and resource
// samples on stderr); bind mounts are --volume HOST:CONTAINER, with no
// short form.
//
// Every subcommand takes --help (or: fnrun help COMMAND). Configuration comes from flags, then the
// environment (FNRUN_DOCKER_HOST or DOCKER_HOST, FNRUN_CONTAINERD_ADDRESS,
// FNRUN_CONTAINERD_NAMESPACE, FNRUN_CNI_CONF, FNRUN_CNI_BIN, FNRUN_LABEL_TAG,
// FNRUN_INSTANCE), then a JSON file given with --config (or FNRUN_CONFIG)
// holding a drivers.Config with its json field names, then defaults.
//
// Every container fnrun creates carries the label tag "fnrun-cli" (see
// --label-tag), which is what `fnrun ps` lists and `fnrun kill` accepts.
// Every fnrun process uses the same driver instance id, so one fnrun does
// not remove the live containers of another at start.
//
// Exit status: `fnrun run` exits with the container's exit code; 124 when
// --timeout ended the call; 137 when the kernel's OOM killer ended it (a
// plain SIGKILL also gives 137, as the container's own code, but only an
// OOM kill prints "out of memory"); 130 or 143 when fnrun itself was
// interrupted (SIGINT, SIGTERM) and ended the container; 125 when fnrun
// failed on its own (bad flags, unreachable daemon, missing image). The
// other subcommands exit 0 on success, 1 on failure and 2 on bad usage.
//
// Errors are one line on stderr. Long work (pulls, bench, waiting for a
// pool) shows a progress indicator on stderr when it is a terminal, and
// one plain line otherwise.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	a := &app{
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		getenv:    os.Getenv,
		stdinTTY:  isTerminal(os.Stdin),
		stderrTTY: isTerminal(os.Stderr),
	}
	os.Exit(a.main(os.Args[1:]))
}

// app is one invocation of the command, with its streams and environment.
type app struct {
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	getenv    func(string) string
	stdinTTY  bool
	stderrTTY bool
}

// Exit codes of subcommands other than run.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

type command struct {
	name    string
	summary string
	run     func(a *app, ctx context.Context, args []string) int
}

var commands = []command{
	{"run", "run one function call in a container and exit with its exit code", (*app).cmdRun},
	{"ps", "list the containers fnrun manages", (*app).cmdPs},
	{"kill", "end and remove containers fnrun manages", (*app).cmdKill},
	{"images", "list images, or clean them to a size budget (images clean)", (*app).cmdImages},
	{"pool", "start a pre-fork pool, wait until it is ready and print its figures", (*app).cmdPool},
	{"doctor", "check the daemons, cgroups, freezer, registry and CNI, and say what to fix", (*app).cmdDoctor},
	{"bench", "benchmark cold, pooled and warm calls against the bare clients", (*app).cmdBench},
	{"serve", "run an invocation agent speaking Fn's API (apps, functions, invoke) over a driver", (*app).cmdServe},
}

func (a *app) main(args []string) int {
	if len(args) == 0 {
		a.usage(a.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help", "help":
		if len(args) > 1 && name == "help" {
			return a.main([]string{args[1], "--help"})
		}
		a.usage(a.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			ctx, stop := signalContext()
			defer stop()
			return c.run(a, ctx, args[1:])
		}
	}
	a.errorf("unknown command %q (see 'fnrun --help')", name)
	return exitUsage
}

// Causes of the command context's end on a signal.
var (
	errSIGINT  = errors.New("interrupted (SIGINT)")
	errSIGTERM = errors.New("terminated (SIGTERM)")
)

// signalContext is cancelled by the first SIGINT or SIGTERM, with
// errSIGINT or errSIGTERM as its cause: a run ends its container, a watch
// loop stops, a bench cleans up. A second signal has its default effect,
// so a stuck clean-up can still be interrupted.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			if s == syscall.SIGTERM {
				cancel(errSIGTERM)
			} else {
				cancel(errSIGINT)
			}
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		signal.Stop(sigs)
		cancel(nil)
	}
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: fnrun COMMAND [flags] [args]")
	fmt.Fprintln(w, "\nfnrun runs function calls in containers through fnrun's drivers (docker, containerd, mock).")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'fnrun COMMAND --help' for the flags of a command.")
}

// errorf prints one line on stderr, prefixed with "fnrun: ".
func (a *app) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", " ")), " ")
	fmt.Fprintln(a.stderr, "fnrun: "+msg)
}

// infof prints a line of information on stderr.
func (a *app) infof(format string, args ...any) {
	fmt.Fprintf(a.stderr, "fnrun: "+format+"\n", args...)
}
