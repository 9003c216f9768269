package drivers_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/mock"
)

// An agent's view of one call: create a cookie, make sure the image is
// there, create, run, wait, close.
func Example() {
	ctx := context.Background()
	drv, err := drivers.New("mock", drivers.Config{})
	if err != nil {
		panic(err)
	}
	defer drv.Close()

	var out strings.Builder
	task := &drivers.Task{
		ID:       "call-1",
		ImageRef: "127.0.0.1:5000/fnrun/busybox:latest",
		Cmd:      `sh -c 'echo "$GREETING"'`,
		Env:      map[string]string{"GREETING": "hello"},
		Stdout:   &out,
		Ext:      map[string]string{mock.ExtStdout: "hello\n"}, // what the mock "prints"
	}
	cookie, err := drv.CreateCookie(ctx, task)
	if err != nil {
		panic(err)
	}
	defer cookie.Close(ctx)

	if needsPull, err := cookie.ValidateImage(ctx); err != nil {
		panic(err)
	} else if needsPull {
		if err := cookie.PullImage(ctx); err != nil {
			panic(err)
		}
	}
	if err := cookie.CreateContainer(ctx); err != nil {
		panic(err)
	}
	wait, err := cookie.Run(ctx)
	if err != nil {
		panic(err)
	}
	res := wait.Wait(ctx)
	fmt.Println(res.Status(), strings.TrimSpace(out.String()))
	// Output: success hello
}

func ExampleSplitCommand() {
	args, _ := drivers.SplitCommand(`sh -c 'echo "a b"; exit 3'`)
	fmt.Printf("%q\n", args)
	// Output: ["sh" "-c" "echo \"a b\"; exit 3"]
}

func ExampleParseImage() {
	fmt.Println(drivers.ParseImage("localhost:5000/fn/hello:0.1"))
	// Output: localhost:5000 fn/hello 0.1
}
