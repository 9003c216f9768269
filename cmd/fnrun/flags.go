package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// flagSet is a flag.FlagSet that knows short aliases and groups, so that
// --help prints "-e, --env K=V" once, with the configuration flags apart.
// Flags take one or two dashes, as with the standard library.
type flagSet struct {
	*flag.FlagSet
	name     string            // "run", "images clean"...
	synopsis string            // the usage line after "fnrun NAME"
	about    string            // paragraphs after the synopsis
	aliases  map[string]string // long name -> short name
	isAlias  map[string]bool
	common   map[string]bool // configuration flags, listed apart
}

func newFlagSet(name, synopsis, about string) *flagSet {
	fs := flag.NewFlagSet("fnrun "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed by the caller, on one line
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, name: name, synopsis: synopsis, about: about,
		aliases: map[string]string{}, isAlias: map[string]bool{}, common: map[string]bool{}}
}

// alias makes -short a synonym of --long.
func (f *flagSet) alias(short, long string) {
	fl := f.Lookup(long)
	if fl == nil {
		panic("alias of undefined flag " + long)
	}
	f.Var(fl.Value, short, fl.Usage)
	f.aliases[long] = short
	f.isAlias[short] = true
}

// parse parses args. It returns done=true when the caller should return
// code at once: after --help (usage on stdout, code 0) or a bad flag (one
// line on stderr, code usageCode).
func (f *flagSet) parse(a *app, args []string, usageCode int) (done bool, code int) {
	err := f.Parse(args)
	switch {
	case err == nil:
		return false, 0
	case errors.Is(err, flag.ErrHelp):
		f.printUsage(a.stdout)
		return true, 0
	}
	a.errorf("%s: %v (see 'fnrun %s --help')", f.name, err, f.name)
	return true, usageCode
}

// usageError reports bad arguments on one line.
func (f *flagSet) usageError(a *app, code int, format string, args ...any) int {
	a.errorf("%s: %s (see 'fnrun %s --help')", f.name, fmt.Sprintf(format, args...), f.name)
	return code
}

func (f *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: fnrun %s %s\n", f.name, f.synopsis)
	if f.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(f.about, "\n"))
	}
	var own, common []*flag.Flag
	f.VisitAll(func(fl *flag.Flag) {
		if f.isAlias[fl.Name] {
			return
		}
		if f.common[fl.Name] {
			common = append(common, fl)
		} else {
			own = append(own, fl)
		}
	})
	if len(own) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		f.printFlags(w, own)
	}
	if len(common) > 0 {
		fmt.Fprintln(w, "\nConfiguration (flags > environment > --config file > defaults):")
		f.printFlags(w, common)
	}
}

func (f *flagSet) printFlags(w io.Writer, list []*flag.Flag) {
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	for _, fl := range list {
		argName, usage := flag.UnquoteUsage(fl)
		head := "--" + fl.Name
		if s, ok := f.aliases[fl.Name]; ok {
			head = "-" + s + ", " + head
		} else {
			head = "    " + head
		}
		if argName != "" {
			head += " " + argName
		}
		fmt.Fprintf(w, "  %s\n", head)
		line := "        " + strings.ReplaceAll(usage, "\n", "\n        ")
		if def := fl.DefValue; def != "" && def != "false" && def != "0" && def != "[]" && def != "0s" {
			line += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintln(w, line)
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// sizeFlag is a byte size flag (64m, 1g); set tells whether it was given.
type sizeFlag struct {
	v   uint64
	set bool
}

func (s *sizeFlag) String() string {
	if s == nil || !s.set {
		return ""
	}
	return formatSize(s.v)
}

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	s.v, s.set = n, true
	return nil
}

// optUint is an optional non-negative integer flag.
type optUint struct {
	v   uint64
	set bool
}

func (o *optUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return fmt.Sprint(o.v)
}

func (o *optUint) Set(v string) error {
	var n uint64
	if _, err := fmt.Sscan(v, &n); err != nil || fmt.Sprint(n) != strings.TrimSpace(v) {
		return fmt.Errorf("invalid number %q", v)
	}
	o.v, o.set = n, true
	return nil
}

// positiveDuration parses a duration flag value that must be positive.
func positiveDuration(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("--%s must be positive, got %v", name, d)
	}
	return nil
}
