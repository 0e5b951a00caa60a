#!/bin/sh
# ecr-node-auth prerm (deb: remove|upgrade|deconfigure|failed-upgrade; rpm %preun: 0
# erase, 1+ upgrade). On removal: stop and disable the unit where systemd runs, then
# delete the hosts.toml files the daemon wrote (first line = its marker) and its
# temp files. Every other file in the certs dir is left alone.
set -e

unit=ecr-node-auth.service
marker='# Managed by ecr-node-auth. Rewritten on every token refresh; local edits are lost.'
config=/etc/ecr-node-auth/config.yaml

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke stop "$unit" || true
	else
		systemctl stop "$unit" || true
	fi
	systemctl disable "$unit" >/dev/null 2>&1 || true
fi

# containerd.certsDir from the config (an absolute path), else the default.
certs=/etc/containerd/certs.d
if [ -r "$config" ]; then
	configured=$(sed -n 's/^[[:space:]]*certsDir:[[:space:]]*["'\'']\{0,1\}\(\/[^"'\''#[:space:]]*\).*/\1/p' "$config" | head -n 1)
	if [ -n "$configured" ]; then
		certs=$configured
	fi
fi

if [ -d "$certs" ]; then
	for f in "$certs"/*/hosts.toml; do
		if [ ! -f "$f" ] || [ -L "$f" ]; then
			continue
		fi
		first=$(head -n 1 "$f" | tr -d '\r')
		if [ "$first" = "$marker" ]; then
			rm -f "$f"
			rmdir "$(dirname "$f")" 2>/dev/null || true
		fi
	done
	for f in "$certs"/*/.hosts.toml.ecr-node-auth-*.tmp; do
		[ -f "$f" ] || continue
		rm -f "$f"
		rmdir "$(dirname "$f")" 2>/dev/null || true
	done
fi
exit 0
