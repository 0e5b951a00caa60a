package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

// PeerPolicy says who may use the socket: root, the daemon's own uid, and
// members of the socket group (by the peer's primary gid, or by the
// supplementary groups of the peer's user).
type PeerPolicy struct {
	// OwnUID is the daemon's uid (os.Getuid()).
	OwnUID int
	// GID is the socket group's gid; -1 for none.
	GID int
	// GroupName names the group in messages ("" with GID -1).
	GroupName string
	// GroupIDs lists the supplementary gids of a uid; nil: os/user.
	GroupIDs func(uid int) ([]int, error)
}

// peerState is what the connection context carries.
type peerState struct {
	ucred *unix.Ucred
	err   error
}

type peerKey struct{}

// peerCred reads SO_PEERCRED from a Unix socket connection.
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, serr
}

// Allow reports whether a peer may use the socket; the error says why not,
// naming the socketGroup setting.
func (p PeerPolicy) Allow(cred *unix.Ucred) error {
	if cred == nil {
		return errors.New("the peer's credentials (SO_PEERCRED) cannot be read")
	}
	uid, gid := int(cred.Uid), int(cred.Gid)
	if uid == 0 || uid == p.OwnUID {
		return nil
	}
	if p.GID >= 0 {
		if gid == p.GID {
			return nil
		}
		lookup := p.GroupIDs
		if lookup == nil {
			lookup = userGroupIDs
		}
		if gids, err := lookup(uid); err == nil {
			for _, g := range gids {
				if g == p.GID {
					return nil
				}
			}
		}
		return fmt.Errorf("uid %d (pid %d) may not use the ecr-node-auth socket: only root, uid %d and members of socketGroup %q are allowed; add the user to that group",
			uid, cred.Pid, p.OwnUID, p.GroupName)
	}
	return fmt.Errorf("uid %d (pid %d) may not use the ecr-node-auth socket: only root and uid %d are allowed; set socketGroup in the daemon's config to let a group in",
		uid, cred.Pid, p.OwnUID)
}

func userGroupIDs(uid int) ([]int, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil, err
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(ids))
	for _, s := range ids {
		if n, err := strconv.Atoi(s); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// DefaultPeerPolicy allows root and the daemon's uid, plus gid if >= 0.
func DefaultPeerPolicy(gid int, groupName string) PeerPolicy {
	return PeerPolicy{OwnUID: os.Getuid(), GID: gid, GroupName: groupName}
}
