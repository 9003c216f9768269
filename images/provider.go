package images

// Provider is an optional interface of a driver whose image store the
// cleaner can manage, for callers such as `fnrun images` that only hold a
// drivers.Driver.
type Provider interface {
	// ImageStore returns the driver's store, usable by a one-shot cleanup
	// job even when the driver runs no cleaner.
	ImageStore() Store
	// ImageCleaner returns the driver's running cleaner, or false when
	// ImageCleanMaxSize is zero.
	ImageCleaner() (*Cleaner, bool)
}
