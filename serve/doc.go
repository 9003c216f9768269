// Package serve is an invocation agent over fnrun's drivers: an HTTP server
// that speaks the part of Fn's API a client uses to deploy and call
// functions, and runs the calls in hot containers that follow Fn's
// container contract, so that an image written for Fn runs unchanged.
//
// # API
//
// Apps and functions are created, read, listed, updated and deleted under
// /v2/apps and /v2/fns, with Fn's JSON field names, status codes and error
// bodies ({"message": "..."}). POST /invoke/{fn_id} calls a function: the
// request body is the call's input, and the function's answer (headers and
// body) is the response, with status 200 and the call's id in Fn-Call-Id.
// Every function returned carries the fnproject.io/fn/invokeEndpoint
// annotation, which Fn's CLI reads to invoke it. Apps and functions live in
// a Store: OpenStore keeps them in a bbolt file across restarts.
//
// # Container contract (http-stream)
//
// Each container gets a folder of its own, bind-mounted at /tmp/iofs
// (the task's UDSAgentPath, UDSDockerPath and UDSDockerDest), and
// FN_FORMAT=http-stream, FN_LISTENER=unix:/tmp/iofs/lsnr.sock, FN_APP_ID,
// FN_APP_NAME, FN_FN_ID, FN_FN_NAME, FN_MEMORY and FN_TYPE in its
// environment, with the app's and the function's config. Once the function
// listens on that socket (a socket, or a relative symlink to one in the same
// folder), calls are sent one at a time as POST /call over HTTP/1.1 with
// Fn-Call-Id, Fn-Deadline (RFC 3339) and the caller's headers. The function
// answers 200 with its response, 502 when it failed (the container goes
// on), 504 when it ran out of time; anything else ends the container.
//
// # Hot containers
//
// A container serves many calls of one function, one at a time. Between
// calls it is frozen (Cookie.Freeze) after a short idle delay
// (WithFreezeIdle, default 50ms as Fn's agent; 0 freezes at once) and thawed
// when the next call takes it; it ends after the function's idle_timeout.
// Containers are grouped by slot key: the function, what its containers are
// made of, and the driver's GetSlotKeyExtensions of the call extensions
// (the fnrun.io/extensions annotation, also handed to BeforeCall and
// AfterCall). A call that finds no idle container waits in a bounded FIFO
// queue while one is started (cold), within the limits per function and in
// all (WithLimits); a full queue, or no container within the function's
// timeout plus the start timeout, answers 503 with Retry-After, as Fn
// answers "too busy". A function that runs past its timeout answers 504;
// one whose container dies mid-call answers 502; either way the container
// is replaced on demand.
//
// # Operations
//
// GET /health reports the containers, the driver's pre-fork pool
// (pool.Reporter) and whether its image cleaner runs (images.Provider);
// GET /metrics serves, in Prometheus' text format, fnrun's OpenCensus views
// (stats.Views) and the server's own (Views): call latency by app, function,
// result, status and cold or hot start, container start latency, freezes,
// queue length and containers by state. Logs are structured, through the
// injected logger. Shutdown stops accepting calls, lets those in flight
// finish until its context ends, then ends and removes every container.
//
// The server does not own the driver: close the driver after the server.
package serve
