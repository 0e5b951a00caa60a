#!/bin/sh
# ecr-node-auth postrm (deb: remove|purge|upgrade|...; rpm %postun: 0 erase, 1+ upgrade).
# Removes the runtime dir on removal and /etc/ecr-node-auth only on purge (deb); rpm
# keeps a changed config as config.yaml.rpmsave, as rpm does.
set -e

case "$1" in
remove | purge | 0)
	rm -f /run/ecr-node-auth/auth.sock
	rmdir /run/ecr-node-auth 2>/dev/null || true
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
esac

if [ "$1" = purge ]; then
	rm -rf /etc/ecr-node-auth
fi
exit 0
