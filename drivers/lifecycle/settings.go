package lifecycle

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/dockerconfig"
	"github.com/fnrun/fnrun/internal/logs"
	"github.com/fnrun/fnrun/pool"
)

// Defaults of drivers.Settings, the same for every driver.
const (
	DefaultCallTimeout = 30 * time.Second
	DefaultPullTimeout = 10 * time.Minute
	DefaultStopGrace   = time.Second
	// DefaultPreForkImage and DefaultPreForkCmd make the pool's holders
	// when the configuration names none, as Fn's driver defaults them.
	DefaultPreForkImage = "busybox"
	DefaultPreForkCmd   = "sleep 2147483647"
)

// drainTimeout bounds how long a run waits for its output to move once
// the container has exited: the stream's end, or any progress, resets it.
// Every process of the container is dead by then, so only a writer that
// stopped reading, or a runtime holding the streams, runs it out.
const drainTimeout = 5 * time.Second

// endedDrainTimeout is drainTimeout for a run ended early (timeout,
// cancel, close): its caller has given up already.
const endedDrainTimeout = time.Second

// Settings are one driver instance's settings, made by Configure.
type Settings struct {
	drivers.Settings
	// Name is the driver's name, in labels, metrics and errors.
	Name string
	// Instance names this driver instance in the labels.
	Instance string
	// Tag is drivers.Config.ContainerLabelTag.
	Tag string
	// Policy is how every call's container is made.
	Policy Policy
	// Pool and PreFork configure the pre-fork pool; Pool is nil without.
	// NoNetPool is the pool of holders without a network, for tasks with
	// DisableNet; nil without.
	Pool      *pool.Config
	NoNetPool *pool.Config
	PreFork   HolderSpec
	// Cleaner configures the image cleaner; nil without.
	Cleaner *images.Config
	// Credentials are those of Settings.DockerConfig, else of the
	// environment (see dockerconfig.FromEnvironment); nil without.
	Credentials *dockerconfig.Config
}

// NoNetwork is the network of the holders of Settings.NoNetPool: a
// runtime makes them with loopback only.
const NoNetwork = "none"

// Policy is what the configuration says about every call's container.
type Policy struct {
	ReadOnlyRoot bool
	// Unprivileged runs as uid 1000 with no capabilities and
	// no-new-privileges.
	Unprivileged bool
	TmpFsInodes  uint64
	ImageVolumes bool
}

// Labels are the ownership labels of every object the driver makes, with
// role (drivers.RoleCall or drivers.RoleHolder) when not empty.
func (s *Settings) Labels(role string) map[string]string {
	l := map[string]string{
		drivers.LabelLibrary:  drivers.LibraryName,
		drivers.LabelDriver:   s.Name,
		drivers.LabelTag:      s.Tag,
		drivers.LabelInstance: s.Instance,
	}
	if role != "" {
		l[drivers.LabelRole] = role
	}
	return l
}

// PoolOption adjusts the pool's configuration as derived from the driver's
// (idle shrink delay, retry pacing...), before the pool starts. Pass it
// with drivers.WithExtra.
type PoolOption func(*pool.Config)

// CleanerOption adjusts the image cleaner's configuration before it
// starts. Pass it with drivers.WithExtra.
type CleanerOption func(*images.Config)

// Configure turns a driver's configuration and options into its settings.
// Every driver calls it first, so the same value means the same everywhere
// and a bad one is an error wrapping drivers.ErrInvalidConfig everywhere.
func Configure(name string, cfg drivers.Config, opts []drivers.Option) (*Settings, error) {
	s := &Settings{
		Settings: drivers.Settings{
			Logger:      logs.Discard(),
			CallTimeout: DefaultCallTimeout,
			PullTimeout: DefaultPullTimeout,
			StopGrace:   DefaultStopGrace,
		},
		Name:     name,
		Instance: cfg.InstanceId,
		Tag:      cfg.ContainerLabelTag,
		Policy: Policy{
			ReadOnlyRoot: cfg.EnableReadOnlyRootFs,
			Unprivileged: !cfg.DisableUnprivilegedContainers,
			TmpFsInodes:  cfg.MaxTmpFsInodes,
			ImageVolumes: cfg.ImageEnableVolume,
		},
	}
	for _, opt := range opts {
		opt(&s.Settings)
	}
	invalid := func(format string, args ...any) (*Settings, error) {
		return nil, fmt.Errorf("%s driver: %s: %w", name, fmt.Sprintf(format, args...), drivers.ErrInvalidConfig)
	}
	switch {
	case s.Logger == nil:
		return invalid("nil logger")
	case s.CallTimeout <= 0:
		return invalid("call timeout %v must be positive", s.CallTimeout)
	case s.PullTimeout <= 0:
		return invalid("pull timeout %v must be positive", s.PullTimeout)
	case s.StopGrace < 0:
		return invalid("stop grace %v is negative", s.StopGrace)
	}
	s.Logger = s.Logger.WithField("driver", name)
	if s.Instance == "" {
		s.Instance = randomID()
	}
	if cfg.PreForkPoolSize > 0 || cfg.PreForkNoNetPoolSize > 0 {
		if err := s.configurePool(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.ImageCleanMaxSize > 0 {
		s.Cleaner = &images.Config{
			MaxSize:  cfg.ImageCleanMaxSize,
			Exempt:   strings.Fields(cfg.ImageCleanExemptTags),
			StateDir: cfg.ImageCleanStateDir,
			Driver:   name,
		}
		if s.Pool != nil || s.NoNetPool != nil {
			s.Cleaner.Exempt = append(s.Cleaner.Exempt, s.PreFork.Image.Familiar)
		}
		for _, o := range s.Extra {
			if f, ok := o.(CleanerOption); ok {
				f(s.Cleaner)
			}
		}
	}
	// Without a Docker config named, the environment's, as Fn's agent
	// reads them: FN_DOCKER_AUTH, else the user's config.json.
	var err error
	if s.DockerConfig != "" {
		s.Credentials, err = dockerconfig.Load(s.DockerConfig, s.CallTimeout, s.Logger)
	} else {
		s.Credentials, err = dockerconfig.FromEnvironment(s.CallTimeout, s.Logger)
	}
	if err != nil {
		return nil, fmt.Errorf("%s driver: %w", name, err)
	}
	return s, nil
}

func (s *Settings) configurePool(cfg drivers.Config) error {
	image := cfg.PreForkImage
	if strings.TrimSpace(image) == "" {
		image = DefaultPreForkImage
	}
	ref, err := drivers.NormalizeImage(image)
	if err != nil {
		return fmt.Errorf("%s driver: pre-fork image: %w: %w", s.Name, drivers.ErrInvalidConfig, err)
	}
	line := cfg.PreForkCmd
	if strings.TrimSpace(line) == "" {
		line = DefaultPreForkCmd
	}
	args, err := drivers.SplitCommand(line)
	if err != nil {
		return fmt.Errorf("%s driver: pre-fork command: %w: %w", s.Name, drivers.ErrInvalidConfig, err)
	}
	s.PreFork = HolderSpec{Image: ref, Args: args}
	configure := func(size, maxSize uint64, networks []string) *pool.Config {
		c := &pool.Config{
			Size:     clampInt(size),
			Max:      clampInt(maxSize),
			UseOnce:  cfg.PreForkUseOnce != 0,
			Networks: networks,
			Driver:   s.Name,
		}
		for _, o := range s.Extra {
			if f, ok := o.(PoolOption); ok {
				f(c)
			}
		}
		return c
	}
	if cfg.PreForkPoolSize > 0 {
		s.Pool = configure(cfg.PreForkPoolSize, cfg.PreForkPoolMax, strings.Fields(cfg.PreForkNetworks))
	}
	if cfg.PreForkNoNetPoolSize > 0 {
		// PreForkPoolMax is the network pool's: this one stays fixed.
		s.NoNetPool = configure(cfg.PreForkNoNetPoolSize, 0, []string{NoNetwork})
	}
	return nil
}

// clampInt keeps an out-of-range setting out of range after the
// conversion, so validation refuses it instead of a wrapped-around value.
func clampInt(v uint64) int {
	if v > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(v)
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
