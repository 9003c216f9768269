// Package logs holds what the packages share about their injected loggers.
package logs

import (
	"io"

	"github.com/sirupsen/logrus"
)

// Discard is the default logger of every package: a library logs only
// where its user tells it to.
func Discard() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
