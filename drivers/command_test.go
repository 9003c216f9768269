package drivers

import (
	"errors"
	"reflect"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   ", nil},
		{"echo hello", []string{"echo", "hello"}},
		{"  echo   hello  ", []string{"echo", "hello"}},
		{`sh -c 'echo "$FOO"; exit 3'`, []string{"sh", "-c", `echo "$FOO"; exit 3`}},
		{`echo "a b" c`, []string{"echo", "a b", "c"}},
		{`echo "say \"hi\" \$HOME \\ \n"`, []string{"echo", `say "hi" $HOME \ \n`}},
		{`echo a\ b`, []string{"echo", "a b"}},
		{`echo '' ""`, []string{"echo", "", ""}},
		{`echo 'it'\''s'`, []string{"echo", "it's"}},
		{"a\tb\nc", []string{"a", "b", "c"}},
		{"line \\\ncontinued", []string{"line", "continued"}},
		{`x"y"'z'`, []string{"xyz"}},
		{"héllo wörld", []string{"héllo", "wörld"}},
	} {
		got, err := SplitCommand(tc.in)
		if err != nil {
			t.Errorf("SplitCommand(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitCommand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{`echo "open`, `echo 'open`, `echo trailing\`, `"`} {
		if _, err := SplitCommand(bad); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("SplitCommand(%q) = %v, want ErrInvalidTask", bad, err)
		}
	}
}

func FuzzSplitCommand(f *testing.F) {
	for _, s := range []string{`sh -c 'a "b" c'`, `a\ b`, `"x\"y"`, `'`, "a\\\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args, err := SplitCommand(s)
		if err != nil {
			return
		}
		again, err := SplitCommand(QuoteCommand(args))
		if err != nil {
			t.Fatalf("QuoteCommand(%q) does not split: %v", args, err)
		}
		if len(args) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(args, again) {
			t.Fatalf("round trip of %q: %q became %q", s, args, again)
		}
	})
}
