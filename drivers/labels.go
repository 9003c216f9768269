package drivers

// Labels every driver puts on the objects it creates (containers, holders,
// snapshots, leases, images it tracks). A driver never touches an object
// without LabelLibrary, and its leak reaper only removes objects whose
// LabelTag is its own ContainerLabelTag and whose LabelInstance is another.
const (
	// LabelLibrary is always LibraryName.
	LabelLibrary = "io.fnrun.library"
	// LabelDriver names the driver that created the object.
	LabelDriver = "io.fnrun.driver"
	// LabelTag is Config.ContainerLabelTag.
	LabelTag = "io.fnrun.tag"
	// LabelInstance is Config.InstanceId, or a random id when unset.
	LabelInstance = "io.fnrun.instance"
	// LabelRole says what the object is for: RoleCall or RoleHolder.
	LabelRole = "io.fnrun.role"

	LibraryName = "fnrun"
	RoleCall    = "call"
	RoleHolder  = "holder"
)
