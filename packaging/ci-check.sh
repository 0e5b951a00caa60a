#!/usr/bin/env bash
# Package CI for ecr-node-auth (issue 5): installs its tools with apt-get, builds the
# deb and rpm packages with `make package`, and checks them:
#   - shellcheck on the maintainer scripts;
#   - lintian on every .deb: no error and no warning (each accepted one is overridden,
#     with its reason, in packaging/deb/lintian-overrides, shipped in the package);
#   - `rpm -qlp --scripts` on every .rpm, read back: files, config(noreplace), scripts;
#   - each .deb unpacked (dpkg-deb -x) into a throwaway root: the unit verified there
#     (systemd-analyze verify --root) and its security exposure <= 2.0;
#   - the host-arch .deb installed, upgraded, removed and purged with `dpkg --root` in a
#     throwaway chroot without systemd (scripts must exit 0 and start nothing; removal
#     deletes only the daemon's own hosts.toml files); the rpm scriptlets run there with
#     rpm's arguments; and the same scripts with a fake systemd to see what they ask of it.
# Exits non-zero on the first failure. SKIP_BUILD=1 checks the packages already in dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$HOME/go/bin:$PATH
export DEBIAN_FRONTEND=noninteractive

MAX_EXPOSURE=2.0
MARKER='# Managed by ecr-node-auth. Rewritten on every token refresh; local edits are lost.'

step() { printf '\n== %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

step "tools"
need=()
for t in lintian:lintian rpm:rpm shellcheck:shellcheck systemd-analyze:systemd dpkg-deb:dpkg; do
	command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
	[ "$(id -u)" = 0 ] || fail "missing ${need[*]}; run as root or apt-get install them"
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
fi
lintian --version
rpm --version
systemd-analyze --version | head -n 1

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	step "make package"
	make package
fi
shopt -s nullglob
debs=(dist/*.deb)
rpms=(dist/*.rpm)
[ "${#debs[@]}" -eq 2 ] || fail "want 2 .deb in dist/ (amd64, arm64), have ${#debs[@]}: ${debs[*]}"
[ "${#rpms[@]}" -eq 2 ] || fail "want 2 .rpm in dist/ (x86_64, aarch64), have ${#rpms[@]}: ${rpms[*]}"

step "shellcheck maintainer scripts"
shellcheck -s sh packaging/scripts/*.sh
echo ok

work=$(mktemp -d /tmp/ena-pkg-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

step "lintian"
for deb in "${debs[@]}"; do
	# lintian refuses nothing as root but says so; the overrides are in the package.
	out=$(lintian --fail-on error,warning --display-info "$deb" 2>&1 | grep -v 'running with root privileges' || true)
	lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || {
		printf '%s\n' "$out"
		fail "lintian: $deb"
	}
	printf '%s: lintian clean (no E:/W:)%s\n' "$deb" "${out:+; info: $(printf '%s' "$out" | tr '\n' ' ')}"
done

step "rpm -qlp --scripts"
for r in "${rpms[@]}"; do
	out=$(rpm -qlp --scripts "$r")
	printf '%s\n' "$out" | sed 's/^/  /' | head -n 12
	for f in /usr/bin/ecr-node-auth /usr/bin/docker-credential-ecr-node-auth \
		/usr/lib/systemd/system/ecr-node-auth.service /etc/ecr-node-auth/config.yaml \
		/usr/share/ecr-node-auth/kubelet-credential-provider-config.yaml; do
		printf '%s\n' "$out" | grep -qx "$f" || fail "$r: $f missing from rpm -qlp"
	done
	for s in 'postinstall scriptlet' 'preuninstall scriptlet' 'postuninstall scriptlet'; do
		printf '%s\n' "$out" | grep -q "^$s" || fail "$r: no $s"
	done
	rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$r" | grep -qx 'cn /etc/ecr-node-auth/config.yaml' ||
		fail "$r: config.yaml is not %config(noreplace)"
	rpm -qp --qf '[%{FILELINKTOS} %{FILENAMES}\n]' "$r" | grep -qx 'ecr-node-auth /usr/bin/docker-credential-ecr-node-auth' ||
		fail "$r: docker-credential-ecr-node-auth is not a symlink to ecr-node-auth"
	echo "$r: files, config(noreplace), symlink and 3 scriptlets present"
done

# targets copies the host's *.target units into a root (what the unit names).
targets() {
	mkdir -p "$1/usr/lib/systemd/system"
	for f in /usr/lib/systemd/system/*.target /lib/systemd/system/*.target; do
		if [ -e "$f" ]; then cp -L "$f" "$1/usr/lib/systemd/system/"; fi
	done
}

step "unpacked .deb: unit verify and security exposure"
host_arch=$(dpkg --print-architecture)
for deb in "${debs[@]}"; do
	root="$work/x-$(basename "$deb" .deb)"
	dpkg-deb -x "$deb" "$root"
	unit="$root/lib/systemd/system/ecr-node-auth.service"
	[ -f "$unit" ] || fail "$deb: no unit at /lib/systemd/system"
	[ -x "$root/usr/bin/ecr-node-auth" ] || fail "$deb: no /usr/bin/ecr-node-auth"
	[ "$(readlink "$root/usr/bin/docker-credential-ecr-node-auth")" = ecr-node-auth ] || fail "$deb: helper symlink"
	grep -q '^registries: \[\]$' "$root/etc/ecr-node-auth/config.yaml" || fail "$deb: config has registries"
	grep -q 'kind: CredentialProviderConfig' "$root/usr/share/ecr-node-auth/kubelet-credential-provider-config.yaml" ||
		fail "$deb: no kubelet CredentialProviderConfig"
	file_arch=$(dpkg-deb -f "$deb" Architecture)
	if [ "$file_arch" = "$host_arch" ]; then
		"$root/usr/bin/ecr-node-auth" version
		# The shipped example must be what this binary prints, once it can.
		if "$root/usr/bin/ecr-node-auth" print-kubelet-config >"$work/kc.yaml" 2>/dev/null; then
			diff -u "$work/kc.yaml" "$root/usr/share/ecr-node-auth/kubelet-credential-provider-config.yaml" ||
				fail "$deb: shipped kubelet config differs from print-kubelet-config"
		fi
	fi
	# ExecReload= names /bin/kill: give the root one (a stub; verify only checks it exists).
	mkdir -p "$root/bin"
	printf '#!/bin/sh\nexit 0\n' >"$root/bin/kill"
	chmod 0755 "$root/bin/kill"
	targets "$root"
	out=$(systemd-analyze verify --root="$root" --man=false ecr-node-auth.service 2>&1) || fail "verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify in $root: $out"
	sec=$(systemd-analyze security --offline=true --no-pager --root="$root" ecr-node-auth.service 2>&1) ||
		fail "security: $sec"
	exposure=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	[ -n "$exposure" ] || fail "no exposure in: $sec"
	awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' ||
		fail "$deb: security exposure $exposure > $MAX_EXPOSURE"
	systemd-analyze security --offline=true --no-pager --root="$root" --threshold=20 ecr-node-auth.service >/dev/null ||
		fail "$deb: systemd-analyze security --threshold=20 failed"
	echo "$deb ($file_arch): unit verified in the unpacked root; exposure $exposure (max $MAX_EXPOSURE)"
done

# mkchroot DIR: a minimal root with /bin/sh and the tools the maintainer scripts use,
# stub systemctl/deb-systemd-invoke that log every call, and no /run/systemd/system.
mkchroot() {
	local r=$1 b
	mkdir -p "$r"/{dev,etc,tmp,run,var/log,usr/bin,usr/sbin}
	mknod -m 0666 "$r/dev/null" c 1 3
	ln -s usr/bin "$r/bin"
	ln -s usr/sbin "$r/sbin"
	for b in dash mkdir rm rmdir head tr sed dirname cat ls env; do
		p=$(type -P "$b") || fail "chroot: no $b on the host"
		p=$(readlink -f "$p")
		cp -L "$p" "$r/usr/bin/$b"
		ldd "$p" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
			mkdir -p "$r$(dirname "$lib")"
			cp -L "$lib" "$r$lib"
		done
	done
	[ -e "$r/usr/bin/sh" ] || ln -s dash "$r/usr/bin/sh"
	for b in systemctl deb-systemd-invoke deb-systemd-helper; do
		printf '#!/bin/sh\necho "%s $*" >> /var/log/systemd-calls\n' "$b" >"$r/usr/bin/$b"
		chmod 0755 "$r/usr/bin/$b"
	done
	# dpkg --root needs its database.
	mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/triggers"
	: >"$r/var/lib/dpkg/status"
	: >"$r/var/lib/dpkg/available"
}

# seed_certs DIR: the daemon's own hosts.toml, its temp file, and someone else's.
seed_certs() {
	local c=$1/etc/containerd/certs.d
	mkdir -p "$c/111122223333.dkr.ecr.us-east-1.amazonaws.com" "$c/docker.io" "$c/444455556666.dkr.ecr.eu-west-1.amazonaws.com"
	printf '%s\nserver = "https://111122223333.dkr.ecr.us-east-1.amazonaws.com"\n' "$MARKER" >"$c/111122223333.dkr.ecr.us-east-1.amazonaws.com/hosts.toml"
	printf 'x\n' >"$c/111122223333.dkr.ecr.us-east-1.amazonaws.com/.hosts.toml.ecr-node-auth-123.tmp"
	printf 'server = "https://registry-1.docker.io"\n' >"$c/docker.io/hosts.toml"
	# An operator's own file for an ECR host, marker not on line 1: never ours.
	printf '# my file\n%s\n' "$MARKER" >"$c/444455556666.dkr.ecr.eu-west-1.amazonaws.com/hosts.toml"
}

check_certs_after_removal() {
	local c=$1/etc/containerd/certs.d
	[ ! -e "$c/111122223333.dkr.ecr.us-east-1.amazonaws.com" ] || fail "removal left the daemon's hosts.toml dir: $(ls -la "$c/111122223333.dkr.ecr.us-east-1.amazonaws.com")"
	[ -f "$c/docker.io/hosts.toml" ] || fail "removal deleted docker.io/hosts.toml (not ours)"
	[ -f "$c/444455556666.dkr.ecr.eu-west-1.amazonaws.com/hosts.toml" ] || fail "removal deleted an operator's ECR hosts.toml"
}

no_systemd_calls() {
	[ ! -s "$1/var/log/systemd-calls" ] || fail "scripts called systemd without systemd running: $(cat "$1/var/log/systemd-calls")"
}

step "maintainer scripts in a chroot without systemd (dpkg --root)"
host_deb=$(ls dist/*_"$host_arch".deb)
r="$work/chroot-deb"
mkchroot "$r"
dpkg --root="$r" -i "$host_deb" >/dev/null || fail "dpkg -i in chroot"
if [ ! -x "$r/usr/bin/ecr-node-auth" ] || [ ! -f "$r/etc/ecr-node-auth/config.yaml" ]; then fail "install did not place files"; fi
[ -d "$r/etc/containerd/certs.d" ] || fail "postinst did not make /etc/containerd/certs.d"
no_systemd_calls "$r"
echo "install: exit 0, nothing started"
echo '# local edit' >>"$r/etc/ecr-node-auth/config.yaml"
dpkg --root="$r" --force-confold -i "$host_deb" >/dev/null || fail "reinstall (upgrade path) in chroot"
grep -q '^# local edit$' "$r/etc/ecr-node-auth/config.yaml" || fail "upgrade replaced the edited conffile"
no_systemd_calls "$r"
echo "upgrade: exit 0, conffile kept, nothing started"
seed_certs "$r"
dpkg --root="$r" -r ecr-node-auth >/dev/null || fail "dpkg -r in chroot"
no_systemd_calls "$r"
check_certs_after_removal "$r"
[ -f "$r/etc/ecr-node-auth/config.yaml" ] || fail "remove (not purge) deleted the config"
[ ! -e "$r/usr/bin/ecr-node-auth" ] || fail "remove left the binary"
echo "remove: exit 0, only the daemon's hosts.toml removed, config kept"
dpkg --root="$r" -P ecr-node-auth >/dev/null || fail "dpkg -P in chroot"
[ ! -e "$r/etc/ecr-node-auth" ] || fail "purge left /etc/ecr-node-auth"
[ -d "$r/etc/containerd/certs.d/docker.io" ] || fail "purge touched certs.d"
echo "purge: exit 0, /etc/ecr-node-auth gone, certs.d untouched"

step "rpm scriptlets in the chroot, rpm's arguments, no systemd"
host_rpm=${rpms[0]}
for x in "${rpms[@]}"; do
	case "$x" in *."$(uname -m)".rpm) host_rpm=$x ;; esac
done
r="$work/chroot-rpm"
mkchroot "$r"
for s in POSTIN PREUN POSTUN; do
	rpm -qp --qf "%{$s}" "$host_rpm" >"$r/tmp/$s"
done
chroot "$r" /bin/sh -e /tmp/POSTIN 1 || fail "rpm %post 1"
chroot "$r" /bin/sh -e /tmp/POSTIN 2 || fail "rpm %post 2 (upgrade)"
chroot "$r" /bin/sh -e /tmp/PREUN 1 || fail "rpm %preun 1 (upgrade)"
chroot "$r" /bin/sh -e /tmp/POSTUN 1 || fail "rpm %postun 1 (upgrade)"
seed_certs "$r"
chroot "$r" /bin/sh -e /tmp/PREUN 0 || fail "rpm %preun 0"
chroot "$r" /bin/sh -e /tmp/POSTUN 0 || fail "rpm %postun 0"
no_systemd_calls "$r"
check_certs_after_removal "$r"
echo "rpm scriptlets: exit 0, nothing started, only the daemon's hosts.toml removed"

step "scripts with a (fake) running systemd: what they ask of it"
r="$work/chroot-systemd"
mkchroot "$r"
mkdir -p "$r/run/systemd/system"
for s in postinst prerm postrm; do cp "packaging/scripts/$s.sh" "$r/tmp/$s"; done
chroot "$r" /bin/sh -e /tmp/postinst configure || fail "postinst configure"
chroot "$r" /bin/sh -e /tmp/postinst configure 0.0.1 || fail "postinst configure (upgrade)"
chroot "$r" /bin/sh -e /tmp/prerm remove || fail "prerm remove"
chroot "$r" /bin/sh -e /tmp/postrm remove || fail "postrm remove"
calls=$(cat "$r/var/log/systemd-calls")
printf '%s\n' "$calls" | sed 's/^/  /'
want='systemctl daemon-reload
systemctl enable ecr-node-auth.service
deb-systemd-invoke start ecr-node-auth.service
systemctl daemon-reload
deb-systemd-invoke restart ecr-node-auth.service
deb-systemd-invoke stop ecr-node-auth.service
systemctl disable ecr-node-auth.service
systemctl daemon-reload'
[ "$calls" = "$want" ] || fail "systemd calls differ; want:
$want"

step "all package checks passed"
