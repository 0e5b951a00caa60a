//go:build !unix

package cri

// Lstat before open is the only symlink check on these systems.
const oNoFollow = 0
