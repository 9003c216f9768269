// Package models holds the call model that fnrun passes to a task's
// BeforeCall and AfterCall hooks: one function invocation, its limits, its
// timings and how it ended.
package models

import "time"

// Call describes one function invocation as the agent sees it. The driver
// does not interpret it; it only hands it to the task's hooks.
type Call struct {
	// ID identifies the call.
	ID string `json:"id"`
	// AppID and FnID name the application and the function being called.
	AppID string `json:"app_id"`
	FnID  string `json:"fn_id"`
	// Image is the image reference the function runs in.
	Image string `json:"image"`
	// Memory is the memory limit in megabytes.
	Memory uint64 `json:"memory"`
	// Timeout bounds one invocation.
	Timeout time.Duration `json:"timeout"`

	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitempty"`
	CompletedAt time.Time `json:"completed_at,omitempty"`

	// Status is one of the drivers' task statuses once the call has ended.
	Status string `json:"status,omitempty"`
	// Error is the message of the error the call ended with, if any.
	Error string `json:"error,omitempty"`
}

// Duration is how long the call ran, or zero while it has not completed.
func (c *Call) Duration() time.Duration {
	if c.StartedAt.IsZero() || c.CompletedAt.IsZero() {
		return 0
	}
	return c.CompletedAt.Sub(c.StartedAt)
}
