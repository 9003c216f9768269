package test

import "github.com/sirupsen/logrus"

// LogCapture is a debug-level logger whose output a test can search: for a
// secret that must never be logged, or a warning that must be.
type LogCapture struct{ SyncBuffer }

// Entry is a logger writing into l.
func (l *LogCapture) Entry() *logrus.Entry {
	lg := logrus.New()
	lg.Out = l
	lg.Level = logrus.DebugLevel
	return logrus.NewEntry(lg)
}
