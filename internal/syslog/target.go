package syslog

import (
	"net"
	"net/url"
	"strings"

	"github.com/fnrun/fnrun/drivers"
)

// defaultPort is the port Docker's syslog driver assumes when the
// address names none.
const defaultPort = "514"

// Target is where a task's output is sent, as Parse derived it from the
// task's drivers.LoggerConfig.
type Target struct {
	// Network is one of udp, tcp, tcp+tls, unix or unixgram; a syslog://
	// URL is udp.
	Network string
	// Address is host:port for udp, tcp and tcp+tls (port 514 when the
	// URL has none) and a socket path for unix and unixgram.
	Address string
	// Tag is the tags as "name=value,name=value", or "" without tags.
	Tag string
}

// URL spells the target the way Docker's syslog-address option wants it.
func (t *Target) URL() string { return t.Network + "://" + t.Address }

// Parse validates a task's log configuration. It returns nil and no error
// when lc asks for no logging, and an error wrapping drivers.ErrInvalidTask
// when the URL or a tag cannot be honoured by every driver.
func Parse(lc drivers.LoggerConfig) (*Target, error) {
	if lc.URL == "" {
		return nil, nil
	}
	u, err := url.Parse(lc.URL)
	if err != nil {
		return nil, drivers.InvalidTaskf("log URL %q: %v", lc.URL, err)
	}
	target := &Target{Network: u.Scheme}
	switch u.Scheme {
	case "syslog", "udp", "tcp", "tcp+tls":
		if u.Scheme == "syslog" {
			// Plain syslog is UDP; Docker wants the transport named.
			target.Network = "udp"
		}
		if u.Host == "" {
			return nil, drivers.InvalidTaskf("log URL %q has no host", lc.URL)
		}
		target.Address = u.Host
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			target.Address = net.JoinHostPort(u.Hostname(), defaultPort)
		}
	case "unix", "unixgram":
		// unix://dev/log would read as host "dev", path "/log".
		if u.Host != "" || u.Path == "" {
			return nil, drivers.InvalidTaskf("log URL %q: want %s:///absolute/socket/path", lc.URL, u.Scheme)
		}
		target.Address = u.Path
	default:
		return nil, drivers.InvalidTaskf("log URL %q: scheme %q is not one of syslog, tcp, udp, tcp+tls, unix, unixgram", lc.URL, u.Scheme)
	}
	tags := make([]string, 0, len(lc.Tags))
	for _, t := range lc.Tags {
		// The tag option is a Go template to Docker: braces would be
		// evaluated, or refused at create.
		if strings.ContainsAny(t.Name+t.Value, "{}") {
			return nil, drivers.InvalidTaskf("log tag %q=%q contains a brace", t.Name, t.Value)
		}
		tags = append(tags, t.Name+"="+t.Value)
	}
	target.Tag = strings.Join(tags, ",")
	return target, nil
}
