package syslog

import (
	"errors"
	"testing"

	"github.com/fnrun/fnrun/drivers"
)

func TestSyslogParse(t *testing.T) {
	tags := []drivers.LoggerTag{{Name: "fn", Value: "app"}, {Name: "call", Value: "c1"}}
	for _, tc := range []struct {
		url  string
		tags []drivers.LoggerTag
		want *Target // nil with invalid false: no logging
		// invalid expects an error wrapping drivers.ErrInvalidTask.
		invalid bool
	}{
		{url: ""},
		{url: "syslog://10.0.0.1:514", want: &Target{Network: "udp", Address: "10.0.0.1:514"}},
		{url: "syslog://logs.example", tags: tags, want: &Target{Network: "udp", Address: "logs.example:514", Tag: "fn=app,call=c1"}},
		{url: "udp://127.0.0.1:1514", want: &Target{Network: "udp", Address: "127.0.0.1:1514"}},
		{url: "tcp://[::1]", want: &Target{Network: "tcp", Address: "[::1]:514"}},
		{url: "tcp+tls://logs.example:6514", want: &Target{Network: "tcp+tls", Address: "logs.example:6514"}},
		{url: "unix:///dev/log", want: &Target{Network: "unix", Address: "/dev/log"}},
		{url: "unixgram:///run/log.sock", want: &Target{Network: "unixgram", Address: "/run/log.sock"}},
		{url: "http://logs.example", invalid: true},
		{url: "logs.example:514", invalid: true},
		{url: "udp://", invalid: true},
		{url: "unix://dev/log", invalid: true},
		{url: "unix://", invalid: true},
		{url: "tcp://%zz", invalid: true},
		{url: "udp://x:1", tags: []drivers.LoggerTag{{Name: "a", Value: "{{.ID}}"}}, invalid: true},
		{url: "udp://x:1", tags: []drivers.LoggerTag{{Name: "}", Value: "b"}}, invalid: true},
	} {
		got, err := Parse(drivers.LoggerConfig{URL: tc.url, Tags: tc.tags})
		switch {
		case tc.invalid:
			if !errors.Is(err, drivers.ErrInvalidTask) {
				t.Errorf("%q: %+v, %v, want drivers.ErrInvalidTask", tc.url, got, err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.url, err)
		case (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want:
			t.Errorf("%q: %+v, want %+v", tc.url, got, tc.want)
		}
	}
}
