package serve

import (
	"errors"
	"fmt"
	"net/http"
)

// Error classes of the server. Every error a handler answers with wraps one
// of them, so an embedder (and the tests) match them with errors.Is whatever
// the message; the HTTP status and the message Fn's clients expect come from
// *APIError.
var (
	// ErrNotFound: no app or function with that id.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the name is taken, or an immutable field would change.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request or the object it carries is malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrTooBusy: no container could serve the call in time or the queue of
	// the function is full. The answer is 503 with Retry-After.
	ErrTooBusy = errors.New("server too busy")
	// ErrCallTimeout: the function ran past its timeout.
	ErrCallTimeout = errors.New("call timed out")
	// ErrFunction: the function's container failed the call (it crashed,
	// answered with something the contract forbids, or never listened).
	ErrFunction = errors.New("function failed")
	// ErrClosed: the server is shutting down.
	ErrClosed = errors.New("server closed")
	// ErrClientGone: the client went away before the call finished.
	ErrClientGone = errors.New("client went away")
)

// APIError is an error with the HTTP status and the message Fn's server
// answers with. Its Unwrap returns the class (ErrNotFound, ErrTooBusy...)
// and, when there is one, the cause.
type APIError struct {
	// Code is the HTTP status.
	Code int
	// Message is the "message" of the JSON error body.
	Message string
	// Class is one of the Err classes of this package.
	Class error
	// Cause is what went wrong underneath, if anything; it is logged, not
	// sent to the client.
	Cause error
}

func (e *APIError) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Cause)
	}
	return e.Message
}

// Unwrap returns the class and the cause.
func (e *APIError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Class, e.Cause}
	}
	return []error{e.Class}
}

// Is matches another *APIError with the same code and message, so the
// package's API error values work with errors.Is even after WithCause.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	return ok && t.Code == e.Code && t.Message == e.Message
}

// WithCause returns a copy of e that carries cause.
func (e *APIError) WithCause(cause error) *APIError {
	c := *e
	c.Cause = cause
	return &c
}

func apiErr(code int, class error, msg string) *APIError {
	return &APIError{Code: code, Message: msg, Class: class}
}

// The errors of Fn's API, with its status codes and messages, so that Fn's
// CLI and client libraries recognise them.
var (
	errInvalidJSON        = apiErr(http.StatusBadRequest, ErrInvalid, "Invalid JSON")
	errAppsNotFound       = apiErr(http.StatusNotFound, ErrNotFound, "App not found")
	errAppsAlreadyExists  = apiErr(http.StatusConflict, ErrConflict, "App already exists")
	errAppsMissingName    = apiErr(http.StatusBadRequest, ErrInvalid, "Missing app name")
	errAppsTooLongName    = apiErr(http.StatusBadRequest, ErrInvalid, fmt.Sprintf("App name must be %d characters or less", maxNameLength))
	errAppsInvalidName    = apiErr(http.StatusBadRequest, ErrInvalid, "Invalid app name")
	errAppIDProvided      = apiErr(http.StatusBadRequest, ErrInvalid, "App ID cannot be supplied on create")
	errAppsIDMismatch     = apiErr(http.StatusBadRequest, ErrInvalid, "App ID in path does not match ID in body")
	errAppsNameImmutable  = apiErr(http.StatusConflict, ErrConflict, "Could not update - name is immutable")
	errFnsNotFound        = apiErr(http.StatusNotFound, ErrNotFound, "Fn not found")
	errFnsExists          = apiErr(http.StatusConflict, ErrConflict, "Fn with specified name already exists")
	errFnsMissingName     = apiErr(http.StatusBadRequest, ErrInvalid, "Missing Fn name")
	errFnsTooLongName     = apiErr(http.StatusBadRequest, ErrInvalid, fmt.Sprintf("Fn name must be %d characters or less", maxNameLength))
	errFnsInvalidName     = apiErr(http.StatusBadRequest, ErrInvalid, "name must be a valid string")
	errFnsMissingAppID    = apiErr(http.StatusBadRequest, ErrInvalid, "Missing AppID on Fn")
	errFnsMissingImage    = apiErr(http.StatusBadRequest, ErrInvalid, "Missing image on Fn")
	errFnsInvalidImage    = apiErr(http.StatusBadRequest, ErrInvalid, "Invalid image on Fn")
	errFnsIDProvided      = apiErr(http.StatusBadRequest, ErrInvalid, "ID cannot be provided for Fn creation")
	errFnsIDMismatch      = apiErr(http.StatusBadRequest, ErrInvalid, "Fn ID in path does not match that in body")
	errFnsNameImmutable   = apiErr(http.StatusConflict, ErrConflict, "Could not update - name is immutable")
	errFnsAppIDImmutable  = apiErr(http.StatusConflict, ErrConflict, "Could not update - app_id is immutable")
	errFnsInvalidTimeout  = apiErr(http.StatusBadRequest, ErrInvalid, fmt.Sprintf("timeout value is out of range, must be between 0 and %d", maxTimeout))
	errFnsInvalidIdle     = apiErr(http.StatusBadRequest, ErrInvalid, fmt.Sprintf("idle_timeout value is out of range, must be between 0 and %d", maxIdleTimeout))
	errInvalidMemory      = apiErr(http.StatusBadRequest, ErrInvalid, fmt.Sprintf("memory value is out of range. It should be between 0 and %d", maxMemoryMB))
	errInvalidConfigKey   = apiErr(http.StatusBadRequest, ErrInvalid, "Invalid config key, keys must be non-empty and hold no '=' or NUL")
	errInvalidAnnotations = apiErr(http.StatusBadRequest, ErrInvalid, "Invalid annotation")
	errInvalidCursor      = apiErr(http.StatusBadRequest, ErrInvalid, "Invalid cursor")
	errInvalidPerPage     = apiErr(http.StatusBadRequest, ErrInvalid, "Invalid per_page")
	errMethodNotAllowed   = apiErr(http.StatusMethodNotAllowed, ErrInvalid, "Method not allowed")
	errPathNotFound       = apiErr(http.StatusNotFound, ErrNotFound, "Path not found")
	errRequestTooBig      = apiErr(http.StatusRequestEntityTooLarge, ErrInvalid, "Request content too large")
	errInternal           = apiErr(http.StatusInternalServerError, errors.New("internal"), "internal server error")

	// Errors of a call.
	errCallTimeoutServerBusy = apiErr(http.StatusServiceUnavailable, ErrTooBusy, "Timed out - server too busy")
	errCallTimeout           = apiErr(http.StatusGatewayTimeout, ErrCallTimeout, "Timed out")
	errFunctionResponse      = apiErr(http.StatusBadGateway, ErrFunction, "error receiving function response")
	errFunctionFailed        = apiErr(http.StatusBadGateway, ErrFunction, "function failed")
	errFunctionInvalid       = apiErr(http.StatusBadGateway, ErrFunction, "invalid function response")
	errFunctionTooBig        = apiErr(http.StatusBadGateway, ErrFunction, "function response body too large")
	errContainerInitFail     = apiErr(http.StatusBadGateway, ErrFunction, "Container failed to initialize, please ensure you are using the latest fdk and check the logs")
	errContainerInitTimeout  = apiErr(http.StatusGatewayTimeout, ErrFunction, "Container initialization timed out, please ensure you are using the latest fdk and check the logs")
	errImagePull             = apiErr(http.StatusBadGateway, ErrFunction, "Failed to pull image")
	errImagePullTimeout      = apiErr(http.StatusGatewayTimeout, ErrFunction, "Image pull timed out")
	errInvalidTask           = apiErr(http.StatusBadRequest, ErrInvalid, "Function cannot run as configured")
	// Fn answers a call whose client went away with 444 and no body; the
	// client never sees it, only the logs and metrics do.
	errClientCancel = apiErr(444, ErrClientGone, "Client cancelled context")
	errShuttingDown = apiErr(http.StatusServiceUnavailable, ErrClosed, "Timed out - server too busy")
)

// asAPIError returns err as an *APIError: itself, or a 500 that carries it.
func asAPIError(err error) *APIError {
	var api *APIError
	if errors.As(err, &api) {
		return api
	}
	return errInternal.WithCause(err)
}
