//go:build unix

package cri

import "syscall"

const oNoFollow = syscall.O_NOFOLLOW
