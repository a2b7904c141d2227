#!/usr/bin/env bash
# Installs the apnsd .deb on this machine with dpkg -i, checks that binaries,
# units, configuration, man pages, user and group land where the units
# expect, verifies the installed units (systemd-analyze verify must print
# nothing), runs the installed apnsd under systemd-socket-activate as the
# apnsd user, then removes and purges the package and checks that nothing
# is left. Needs root, and the Debian packages systemd and man-db.
# There is no running systemd here: nothing is started through systemctl.
#
# Usage: packaging/test-deb.sh [dist/apnsd_VERSION_ARCH.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(ls -t dist/apnsd_*.deb 2>/dev/null | head -n1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "test-deb: no .deb (run packaging/build-deb.sh first)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "test-deb: must run as root (dpkg -i)" >&2; exit 1; }
# Minimal images (Debian's Docker images) tell dpkg not to install man pages.
man_excluded=no
if grep -qs '^path-exclude=*/usr/share/man' /etc/dpkg/dpkg.cfg /etc/dpkg/dpkg.cfg.d/*; then
	man_excluded=yes
fi
tools=(systemd-analyze systemd-socket-activate setpriv)
[ "$man_excluded" = yes ] || tools+=(man)
for tool in "${tools[@]}"; do
	command -v "$tool" >/dev/null || { echo "test-deb: $tool is missing (apt-get install systemd man-db util-linux)" >&2; exit 1; }
done
if dpkg-query -W -f='${Status}' apnsd 2>/dev/null | grep -q 'ok installed'; then
	echo "test-deb: apnsd is already installed here; refusing to replace it" >&2
	exit 1
fi

if [ -e /etc/apnsd ]; then
	echo "test-deb: /etc/apnsd exists here (left by an earlier apnsd?); refusing to touch it" >&2
	exit 1
fi

version=$(dpkg-deb -f "$deb" Version)
fail=0
check() { # check DESCRIPTION COMMAND...
	local what=$1; shift
	if "$@" >/dev/null 2>&1; then echo "ok    $what"; else echo "FAIL  $what"; fail=1; fi
}
user_existed=no
getent passwd apnsd >/dev/null && user_existed=yes
group_existed=no
getent group apnsd >/dev/null && group_existed=yes

daemon_pid=
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
	if dpkg-query -W -f='${Status}' apnsd 2>/dev/null | grep -q 'installed\|config-files'; then
		dpkg --purge apnsd >/dev/null 2>&1 || true
	fi
	rm -f /etc/apnsd/test-deb-admin-key.pem
	rmdir /etc/apnsd 2>/dev/null || true
	if [ "$user_existed" = no ] && getent passwd apnsd >/dev/null; then userdel apnsd 2>/dev/null || true; fi
	if [ "$group_existed" = no ] && getent group apnsd >/dev/null; then groupdel apnsd 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "== dpkg -i $deb"
dpkg -i "$deb"

echo "== files"
units=/usr/lib/systemd/system
check "package is installed" sh -c "dpkg-query -W -f='\${Status}' apnsd | grep -q 'install ok installed'"
check "/usr/bin/apnsd is executable and is version $version" sh -c "[ \"\$(/usr/bin/apnsd -version)\" = 'apnsd $version' ]"
check "/usr/bin/apnsctl is executable and is version $version" sh -c "[ \"\$(/usr/bin/apnsctl version)\" = 'apnsctl $version' ]"
check "$units/apnsd.service" test -f $units/apnsd.service
check "$units/apnsd.socket" test -f $units/apnsd.socket
check "/usr/lib/sysusers.d/apnsd.conf" test -f /usr/lib/sysusers.d/apnsd.conf
check "/usr/lib/tmpfiles.d/apnsd.conf" test -f /usr/lib/tmpfiles.d/apnsd.conf
check "/etc/apnsd/apnsd.toml is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' apnsd | grep -q ' /etc/apnsd/apnsd.toml '"
if [ "$man_excluded" = yes ]; then
	check "man pages in the .deb (dpkg here excludes /usr/share/man)" sh -c "
		dpkg-deb -c '$deb' | grep -q ' ./usr/share/man/man8/apnsd.8.gz\$' &&
		dpkg-deb -c '$deb' | grep -q ' ./usr/share/man/man8/apnsctl.8.gz\$'"
else
	check "man apnsd(8) and apnsctl(8)" sh -c "man -w 8 apnsd && man -w 8 apnsctl"
fi
check "docs and example config" test -f /usr/share/doc/apnsd/systemd.md -a -f /usr/share/doc/apnsd/examples/apnsd.toml.example
check "copyright (DEP-5) and changelog" sh -c "head -n1 /usr/share/doc/apnsd/copyright | grep -q ^Format: && zcat /usr/share/doc/apnsd/changelog.gz | head -n1 | grep -q \"^apnsd ($version)\""

echo "== user, group and directories the units expect"
svc_user=$(sed -n 's/^User=//p' $units/apnsd.service)
svc_group=$(sed -n 's/^Group=//p' $units/apnsd.service)
sock_group=$(sed -n 's/^SocketGroup=//p' $units/apnsd.socket)
listen=$(sed -n 's/^ListenStream=//p' $units/apnsd.socket)
exec_start=$(sed -n 's/^ExecStart=//p' $units/apnsd.service)
conf=$(printf '%s\n' "$exec_start" | sed -n 's/.*-config \([^ ]*\).*/\1/p')
check "User=$svc_user exists, is a system user without a login shell" sh -c "
	entry=\$(getent passwd '$svc_user') && uid=\$(echo \"\$entry\" | cut -d: -f3) && [ \"\$uid\" -lt 1000 ] &&
	case \$(echo \"\$entry\" | cut -d: -f7) in */nologin|*/false) true;; *) false;; esac"
check "Group=$svc_group exists and is $svc_user's primary group" sh -c "[ \"\$(id -gn '$svc_user')\" = '$svc_group' ]"
check "SocketGroup=$sock_group exists" getent group "$sock_group"
check "ExecStart binary ${exec_start%% *} exists" test -x "${exec_start%% *}"
check "ExecStart's -config $conf exists" test -f "$conf"
check "config socket.path is ListenStream=$listen" grep -qx "path = \"$listen\"" "$conf"
check "$(dirname "$listen") exists, owned by $svc_user" sh -c "[ \"\$(stat -c %U:%G:%a '$(dirname "$listen")')\" = '$svc_user:$svc_group:755' ]"
check "apnsd.socket is enabled (sockets.target.wants)" test -L /etc/systemd/system/sockets.target.wants/apnsd.socket
check "apnsd.service is not enabled (example config has no credentials)" test ! -e /etc/systemd/system/multi-user.target.wants/apnsd.service
check "shipped example config is refused by -check (exit 3) until configured" sh -c "/usr/bin/apnsd -check -config '$conf'; [ \$? -eq 3 ]"

echo "== systemd-analyze verify (must print nothing)"
verify_opts=()
[ "$man_excluded" = no ] || verify_opts=(--man=no)
out=$(systemd-analyze verify "${verify_opts[@]}" $units/apnsd.socket $units/apnsd.service 2>&1) || true
if [ -n "$out" ]; then echo "$out"; echo "FAIL  systemd-analyze verify printed the above"; fail=1; else echo "ok    systemd-analyze verify"; fi
systemd-analyze security --offline=yes $units/apnsd.service 2>&1 | tail -n1

echo "== installed apnsd under systemd-socket-activate, as $svc_user"
log=$(mktemp)
systemd-socket-activate -l "$listen" --fdname=apnsd.socket \
	setpriv --reuid="$svc_user" --regid="$svc_group" --init-groups --inh-caps=-all \
	/usr/bin/apnsd -demo -socket "$listen" -log-format journal >"$log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$listen" ] && break; sleep 0.1; done
check "apnsctl ping (starts apnsd on the first connection)" /usr/bin/apnsctl -timeout 30s ping
check "apnsctl send to the demo stand-in" /usr/bin/apnsctl send -token a1b2c3d4e5f60718 -alert 'test-deb'
check "apnsd runs as $svc_user" sh -c "[ \"\$(ps -o user= -p $daemon_pid)\" = '$svc_user' ]"
kill -TERM "$daemon_pid"
wait "$daemon_pid" && rc=0 || rc=$?
daemon_pid=
check "apnsd stopped cleanly on SIGTERM" test "$rc" -eq 0
check "apnsd used the inherited socket" grep -q 'using the socket systemd passed' "$log"
check "apnsd left the inherited socket file alone" test -S "$listen"
[ $fail -eq 0 ] || cat "$log"
rm -f "$log" "$listen"

# What an admin adds: a key file (the package must not delete it) and what
# dpkg leaves after a conffile prompt (the package must delete it).
echo "not a key" >/etc/apnsd/test-deb-admin-key.pem
echo "old" >/etc/apnsd/apnsd.toml.dpkg-old

echo "== dpkg -r"
dpkg -r apnsd
check "binaries removed" test ! -e /usr/bin/apnsd -a ! -e /usr/bin/apnsctl
check "units removed" test ! -e $units/apnsd.service -a ! -e $units/apnsd.socket
check "config kept after remove" test -f /etc/apnsd/apnsd.toml

echo "== dpkg --purge"
purge_out=$(dpkg --purge apnsd 2>&1)
echo "$purge_out"
check "apnsd.toml and apnsd.toml.dpkg-old removed on purge" test ! -e /etc/apnsd/apnsd.toml -a ! -e /etc/apnsd/apnsd.toml.dpkg-old
check "the admin's key file is kept on purge" test -f /etc/apnsd/test-deb-admin-key.pem
check "purge names /etc/apnsd and the file it kept" sh -c "printf '%s\n' \"\$1\" | grep -q 'purge kept /etc/apnsd' && printf '%s\n' \"\$1\" | grep -q '/etc/apnsd/test-deb-admin-key.pem'" sh "$purge_out"
rm -r /etc/apnsd
check "no unit symlinks left" sh -c "! find /etc/systemd/system -name 'apnsd.*' | grep -q ."
check "/var/lib/apnsd and /run/apnsd removed" test ! -e /var/lib/apnsd -a ! -e /run/apnsd
check "nothing of apnsd left in dpkg" sh -c "! dpkg-query -W apnsd"

echo "== dpkg -i, then dpkg --purge at once (nothing added to /etc/apnsd)"
dpkg -i "$deb" >/dev/null
purge_out=$(dpkg --purge apnsd 2>&1)
check "/etc/apnsd removed on purge" test ! -e /etc/apnsd
check "purge says nothing about kept files" sh -c "! printf '%s\n' \"\$1\" | grep -q 'kept'" sh "$purge_out"
check "no unit symlinks left" sh -c "! find /etc/systemd/system -name 'apnsd.*' | grep -q ."

if [ $fail -ne 0 ]; then echo "test-deb: FAILED" >&2; exit 1; fi
echo "test-deb: all checks passed"
