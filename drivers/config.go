package drivers

// DefaultContainerdNamespace is the containerd namespace used when
// Config.ContainerdNamespace is empty.
const DefaultContainerdNamespace = "fnrun"

// Config configures a driver. Fields a driver does not use are ignored.
type Config struct {
	// Docker is the Docker endpoint, unix:///path or tcp://host:port.
	// Empty uses the DOCKER_HOST environment default.
	Docker string `json:"docker"`
	// DockerNetworks is a space-separated list of networks that new
	// containers are spread over by least use.
	DockerNetworks string `json:"docker_networks"`
	// DockerLoadFile is an image tarball loaded into the daemon at start.
	DockerLoadFile string `json:"docker_load_file"`
	// ServerVersion is the oldest daemon version accepted.
	ServerVersion string `json:"server_version"`

	// PreForkPoolSize is the number of namespace-holder containers kept
	// running; 0 disables the pool.
	PreForkPoolSize uint64 `json:"pre_fork_pool_size"`
	// PreForkPoolMax bounds the pool's growth on misses; 0 means
	// PreForkPoolSize (a fixed pool).
	PreForkPoolMax uint64 `json:"pre_fork_pool_max"`
	// PreForkImage and PreForkCmd are the holders' image and command.
	PreForkImage string `json:"pre_fork_image"`
	PreForkCmd   string `json:"pre_fork_cmd"`
	// PreForkUseOnce, when non-zero, replaces a holder after one use.
	PreForkUseOnce uint64 `json:"pre_fork_use_once"`
	// PreForkNetworks is a space-separated list of networks that holders
	// are spread over.
	PreForkNetworks string `json:"pre_fork_networks"`
	// PreForkNoNetPoolSize is the number of holders without a network kept
	// for tasks with DisableNet (as PreForkPoolSize is for the others; the
	// same image, command, growth and use-once rules); 0 keeps none, and
	// such tasks get a namespace of their own.
	PreForkNoNetPoolSize uint64 `json:"pre_fork_no_net_pool_size"`

	// MaxTmpFsInodes limits the inodes of the /tmp tmpfs; 0 is the default.
	MaxTmpFsInodes uint64 `json:"max_tmpfs_inodes"`
	// EnableReadOnlyRootFs mounts the root filesystem read-only, with a
	// writable /tmp.
	EnableReadOnlyRootFs bool `json:"enable_readonly_rootfs"`
	// ContainerLabelTag tags every object this driver creates, so leftovers
	// of earlier instances with the same tag can be removed at start.
	ContainerLabelTag string `json:"container_label_tag"`
	// InstanceId names this driver instance in the labels.
	InstanceId string `json:"instance_id"`

	// ImageCleanMaxSize is the byte budget of the image store; 0 disables
	// the image cleaner.
	ImageCleanMaxSize uint64 `json:"image_clean_max_size"`
	// ImageCleanExemptTags is a space-separated list of images the cleaner
	// never removes.
	ImageCleanExemptTags string `json:"image_clean_exempt_tags"`
	// ImageCleanStateDir is a folder where the cleaner keeps last-use times
	// across restarts, for runtimes that cannot store them on the image.
	ImageCleanStateDir string `json:"image_clean_state_dir"`
	// ImageEnableVolume allows images that declare volumes.
	ImageEnableVolume bool `json:"image_enable_volume"`
	// DisableUnprivilegedContainers runs containers as the image's user
	// with the runtime's default capabilities.
	DisableUnprivilegedContainers bool `json:"disable_unprivileged_containers"`

	// Containerd is the containerd socket address.
	Containerd string `json:"containerd"`
	// ContainerdNamespace is the containerd namespace; empty means
	// DefaultContainerdNamespace.
	ContainerdNamespace string `json:"containerd_namespace"`
	// CNIConfDir and CNIBinDir locate the CNI network configuration and
	// plugins the containerd driver gives containers a network with.
	// Empty means DefaultCNIConfDir and DefaultCNIBinDir.
	CNIConfDir string `json:"cni_conf_dir"`
	CNIBinDir  string `json:"cni_bin_dir"`
}

// Defaults of the CNI locations, as Debian's containernetworking-plugins
// installs them.
const (
	DefaultCNIConfDir = "/etc/cni/net.d"
	DefaultCNIBinDir  = "/usr/lib/cni"
)

// Namespace returns the containerd namespace to use.
func (c Config) Namespace() string {
	if c.ContainerdNamespace == "" {
		return DefaultContainerdNamespace
	}
	return c.ContainerdNamespace
}
