// Package dockerconfigtest holds what the tests of every driver share to
// exercise Docker config.json credentials: a config file writer and a fake
// credential helper, so that the helper protocol is faked in one place.
package dockerconfigtest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// HelperName is the fake helper's name in credsStore or credHelpers.
const HelperName = "fnrun-test"

// HelperProgramPrefix is what a helper's name is prefixed with to give the
// program the docker CLI runs.
const HelperProgramPrefix = "docker-credential-"

// WriteConfig writes content as config.json into a folder of its own and
// returns the folder.
func WriteConfig(t testing.TB, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// FakeHelper is docker-credential-fnrun-test, first on PATH for the test.
// It records every server address it is asked about; it answers the
// credentials of Answer for its one host, and "credentials not found in
// native keychain" (exit 1) for any other host or without an answer; after
// Fail it prints the given output on both streams and exits 3.
type FakeHelper struct {
	dir string
}

// NewFakeHelper installs the fake helper for host. It changes PATH for the
// rest of the test, so the test cannot be parallel.
func NewFakeHelper(t testing.TB, host string) *FakeHelper {
	t.Helper()
	state := t.TempDir()
	script := `#!/bin/sh
D='` + state + `'
[ "$1" = get ] || exit 2
server=$(cat)
printf '%s\n' "$server" >> "$D/asked"
if [ -f "$D/fail" ]; then cat "$D/fail" >&2; cat "$D/fail"; exit 3; fi
if [ "$server" = '` + host + `' ] && [ -f "$D/answer.json" ]; then cat "$D/answer.json"; exit 0; fi
echo "credentials not found in native keychain"
exit 1
`
	InstallHelper(t, HelperName, script)
	return &FakeHelper{dir: state}
}

// InstallHelper puts a helper program named docker-credential-name with
// the given shell script first on PATH for the rest of the test.
func InstallHelper(t testing.TB, name, script string) {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, HelperProgramPrefix+name), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// Answer makes the helper answer user and secret for its host, as the
// protocol's JSON.
func (f *FakeHelper) Answer(t testing.TB, user, secret string) {
	t.Helper()
	b, err := json.Marshal(map[string]string{"ServerURL": "ignored", "Username": user, "Secret": secret})
	if err != nil {
		t.Fatal(err)
	}
	f.AnswerRaw(t, b)
}

// AnswerRaw makes the helper print answer, whatever it is, with exit 0.
func (f *FakeHelper) AnswerRaw(t testing.TB, answer []byte) {
	t.Helper()
	f.write(t, "answer.json", answer)
}

// NoAnswer makes the helper have nothing stored for its host.
func (f *FakeHelper) NoAnswer(t testing.TB) { t.Helper(); f.remove(t, "answer.json") }

// Fail makes the helper print output on both streams and exit 3.
func (f *FakeHelper) Fail(t testing.TB, output string) {
	t.Helper()
	f.write(t, "fail", []byte(output))
}

// StopFailing undoes Fail.
func (f *FakeHelper) StopFailing(t testing.TB) { t.Helper(); f.remove(t, "fail") }

// Asked lists the server addresses the helper was asked about, in order.
func (f *FakeHelper) Asked(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "asked"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// Forget clears the record of what the helper was asked.
func (f *FakeHelper) Forget(t testing.TB) { t.Helper(); f.remove(t, "asked") }

func (f *FakeHelper) write(t testing.TB, name string, content []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), content, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *FakeHelper) remove(t testing.TB, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(f.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
