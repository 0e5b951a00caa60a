#!/bin/sh
# ecr-node-auth postinst (deb: configure [old-version]; rpm %post: 1 install, 2+ upgrade).
# Enables and (re)starts the unit only where systemd is running; in a build chroot,
# an image builder without systemd or a container it does nothing but make the certs dir.
set -e

unit=ecr-node-auth.service

# The unit may write only /etc/containerd/certs.d (ReadWritePaths=): make it exist.
mkdir -p /etc/containerd/certs.d

case "$1" in
configure) if [ -n "$2" ]; then action=restart; else action=start; fi ;;
1) action=start ;;
[2-9] | [1-9][0-9]*) action=restart ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$action" = start ]; then
		systemctl enable "$unit" >/dev/null 2>&1 || true
	fi
	# deb-systemd-invoke honours policy-rc.d (image builds that forbid starts).
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke "$action" "$unit" || true
	else
		systemctl "$action" "$unit" || true
	fi
fi
exit 0
