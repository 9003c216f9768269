// Package fn replays the scenarios of the Fn project's own driver tests
// (fnproject/fn, api/agent/drivers: docker_test.go, docker_pool_test.go,
// image_cleaner_test.go, image_cache_test.go, image_puller_test.go,
// registry_test.go, driver_test.go and the mock) against fnrun, the way an
// Fn agent that switched its imports would meet them.
//
// The package holds only tests. Each one opens the real drivers through
// the registry, as an agent does (drivers.Open with "docker" or
// "containerd", a logger and a label tag of its own), and runs on both
// runtimes unless the scenario is Docker's alone (DockerNetworks, the
// daemon version check). Where Fn's test pokes at its driver's insides (a
// cookie's network id, the pool's free list, a mocked Docker client), the
// scenario is checked from the outside instead: through the contract, the
// optional interfaces a driver offers (drivers.ContainerLister,
// pool.Reporter, images.Provider), the bare Docker and containerd clients,
// and the loopback registries.
//
//   - runner: the image's own command, a command's stdout, DockerNetworks
//     spread (docker), the server version check (docker), a task without
//     network, an unreachable syslog endpoint;
//   - the start-up clean-up of the containers other instances with the
//     same label tag left: another tag and the same instance are left
//     alone, another instance's running and dead containers are removed;
//   - volumes: bad task volumes fail before any daemon call, an image that
//     declares volumes is refused unless ImageEnableVolume;
//   - the pre-fork pool: calls lease holders, a fixed pool misses when
//     exhausted and grows only with PreForkPoolMax, use-once replaces a
//     holder after one call, holders killed from outside or whose command
//     exits are replaced while calls go on, the pool image is pulled when
//     absent and exempt from the image cleaner;
//   - the image cleaner: least recently used idle images evicted under a
//     budget, busy and exempt images kept, a cookie's image busy from
//     ValidateImage to Close;
//   - pulls: concurrent pulls of one image shared, one per tag, retried
//     with the driver's retry policy and failed together;
//   - registry credentials: FN_DOCKER_AUTH, else the user's Docker
//     config.json, for the image's exact registry host only, and a task's
//     Fn-style DockerAuth;
//   - ParseImage's answers for Fn's table, and the mock without pulls.
//
// The tests need the environment `make up` writes (see test.Env): without
// it they skip, with CI=true they fail. The README's "Moving from Fn"
// section lists, behaviour by behaviour, where fnrun does what Fn's
// drivers do and where it deliberately does not.
package fn
