// Package images keeps a runtime's image store under a byte budget: a
// size-budgeted LRU of images with busy counts and exempt references, and
// the background job that evicts idle images through a small Store
// interface that each driver implements.
package images
