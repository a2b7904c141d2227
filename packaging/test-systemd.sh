#!/usr/bin/env bash
# Installs the apnsd .deb in a Debian 12 container booted with systemd-nspawn
# (a real systemd 252 as PID 1) and checks, through systemctl, what
# test-deb.sh cannot without one: socket activation, Type=notify start,
# failed starts, the Status: line, reload (synchronous, failures reported),
# the watchdog, restart under load, LoadCredential= with
# ${CREDENTIALS_DIRECTORY}, the sandbox, dpkg -r and --purge.
# Prints PASS or FAIL per check (with logs for a failure) and a summary.
#
# The APNs stand-ins are those of the installed `apnsd -demo`, run as a
# separate unit in the container; the installed service is configured with
# copies of their throwaway credentials. Nothing leaves loopback.
#
# The container's tree (debootstrap bookworm, ~270 MB, a few minutes) is
# cached in $APNSD_MACHINE (default /var/lib/machines/apnsd-bookworm) and
# booted with --volatile=overlay: each run starts from the same clean tree
# and leaves it untouched. Delete the directory to rebuild it.
#
# Usage: packaging/test-systemd.sh [dist/apnsd_VERSION_ARCH.deb]
# Environment: APNSD_MACHINE (the cached tree), DEBIAN_MIRROR (default: the
# one apt uses here), APNSD_LOAD_CLIENTS and APNSD_LOAD_RESTARTS (the
# restart-under-load check: 4 clients, 3 restarts).
# Exit status: 0 all checks passed, 1 a check failed, 77 this machine cannot
# boot the container (not root, no systemd-nspawn/debootstrap, debootstrap
# or boot failed): nothing was tested. 2: usage.
# Needs root and the Debian packages systemd-container and debootstrap
# (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

SKIP=77
started=$(date +%s)
skip() { echo "test-systemd: SKIPPED, cannot boot a systemd container here: $*" >&2; exit $SKIP; }

deb=${1:-$(ls -t dist/apnsd_*.deb 2>/dev/null | head -n1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "test-systemd: no .deb (run packaging/build-deb.sh first)" >&2; exit 2; }
deb=$(realpath "$deb")
[ "$(id -u)" -eq 0 ] || skip "must run as root"

need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
	echo "test-systemd: installing ${need[*]}" >&2
	{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; } ||
		skip "cannot install ${need[*]}"
fi

# --- the cached tree ----------------------------------------------------------
tree=${APNSD_MACHINE:-/var/lib/machines/apnsd-bookworm}
marker=$tree/.apnsd-test-tree
mkdir -p "$(dirname "$tree")"
exec 9>"$tree.lock"
flock 9 # one builder at a time; concurrent runs boot their own overlays
if [ ! -f "$marker" ]; then
	mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
	mirror=${mirror:-http://deb.debian.org/debian}
	echo "test-systemd: building $tree with debootstrap from $mirror (once; a few minutes)" >&2
	rm -rf "$tree.tmp"
	t0=$(date +%s)
	if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,iproute2,man-db \
		bookworm "$tree.tmp" "$mirror" >"$tree.debootstrap.log" 2>&1; then
		tail -n 20 "$tree.debootstrap.log" >&2
		rm -rf "$tree.tmp"
		skip "debootstrap failed (log: $tree.debootstrap.log)"
	fi
	echo "debootstrap bookworm $(date -u +%FT%TZ), $(($(date +%s) - t0))s" >"$tree.tmp/.apnsd-test-tree"
	rm -rf "$tree"
	mv "$tree.tmp" "$tree"
fi
flock -u 9

# --- boot -----------------------------------------------------------------------
machine=apnsd-test-$$
nspawn_log=$(mktemp)
nspawn_pid=
pid1=
cleanup() {
	if [ -n "$pid1" ] && kill -0 "$pid1" 2>/dev/null; then
		nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1 || true
		for _ in $(seq 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
	fi
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		kill "$nspawn_pid" 2>/dev/null || true
		sleep 2
		kill -9 "$nspawn_pid" 2>/dev/null || true
	fi
	rm -f "$nspawn_log"
}
trap cleanup EXIT
# --keep-unit and --register=no: there may be no host systemd/machined.
setsid systemd-nspawn -D "$tree" --volatile=overlay --boot --register=no --keep-unit \
	--console=passive -M "$machine" --bind-ro="$deb:/root/apnsd.deb" \
	>"$nspawn_log" 2>&1 </dev/null &
nspawn_pid=$!
for _ in $(seq 100); do
	pid1=$(ps -eo pid=,ppid=,comm= | awk -v p="$nspawn_pid" '$2 == p && $3 == "systemd" {print $1}')
	[ -n "$pid1" ] && break
	kill -0 "$nspawn_pid" 2>/dev/null || break
	sleep 0.2
done
if [ -z "$pid1" ]; then
	cat "$nspawn_log" >&2
	skip "systemd-nspawn did not start a systemd"
fi
# c CMD...: run CMD inside the container, with a clean environment.
c() { nsenter -t "$pid1" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
# Until PID 1 has set up its bus, systemctl cannot connect: retry.
boot_deadline=$(($(date +%s) + 90))
while :; do
	booted=$(c timeout 90 systemctl is-system-running --wait 2>&1 || true)
	case $booted in *"Failed to connect to bus"*) ;; *) break ;; esac
	[ "$(date +%s)" -lt $boot_deadline ] || break
	sleep 0.5
done
case $booted in
running | degraded) ;;
*)
	cat "$nspawn_log" >&2
	skip "the container did not boot (is-system-running: $booted)"
	;;
esac
echo "test-systemd: booted $(c systemctl --version | head -n1) in $(($(date +%s) - started))s ($booted)"
[ "$booted" = running ] || c systemctl --failed --no-pager || true

# --- checks -----------------------------------------------------------------------
pass=0
fail=0
failed=()
out=$(mktemp)
trap 'rm -f "$out"; cleanup' EXIT
# check NAME COMMAND...: PASS when COMMAND succeeds; else FAIL, with its
# output and the end of apnsd's journal.
check() {
	local name=$1
	shift
	if "$@" >"$out" 2>&1; then
		echo "PASS  $name"
		pass=$((pass + 1))
	else
		echo "FAIL  $name"
		sed 's/^/      | /' "$out"
		echo "      | -- journalctl -u apnsd -u apnsd.socket -n 15:"
		c journalctl -u apnsd -u apnsd.socket -n 15 --no-pager -o short-precise 2>&1 | sed 's/^/      | /'
		fail=$((fail + 1))
		failed+=("$name")
	fi
}
# wait_for SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt $deadline ] || return 1
		sleep 0.2
	done
}
prop() { c systemctl show -P "$2" "$1"; } # prop UNIT PROPERTY
cursor() { c journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p'; }
is() { # is WANT COMMAND...: COMMAND prints WANT
	local got
	got=$("${@:2}")
	[ "$got" = "$1" ] || { echo "want '$1', got '$got'"; return 1; }
}
# apnsd_log CURSOR [IDENT]: apnsd.service's entries logged by IDENT (default
# apnsd) after CURSOR, one JSON object a line with PRIORITY and MESSAGE.
# Filtered here, not by journalctl: on 252, --after-cursor with field
# matches skips the first matching entry, and with -p finds none.
apnsd_log() {
	c journalctl --after-cursor="$1" -o json \
		--output-fields=PRIORITY,MESSAGE,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER |
		grep -F '"_SYSTEMD_UNIT":"apnsd.service"' | grep -F "\"SYSLOG_IDENTIFIER\":\"${2:-apnsd}\"" || true
}
at_most() { grep "\"PRIORITY\":\"[0-$1]\""; } # at_most N: entries of priority N or more urgent
status_text() { prop apnsd.service StatusText; }
status_has() { status_text | grep -qF -- "$1"; }
export -f c prop is status_text status_has apnsd_log at_most
export pid1

echo "== install"
check "dpkg -i" c dpkg -i /root/apnsd.deb
check "apnsd.socket is enabled and listening" bash -c '
	[ "$(c systemctl is-enabled apnsd.socket)" = enabled ] &&
	[ "$(c systemctl show -P SubState apnsd.socket)" = listening ]'
check "apnsd.service is not enabled, not running" bash -c '
	[ "$(c systemctl is-enabled apnsd.service)" = disabled ] &&
	[ "$(c systemctl show -P ActiveState apnsd.service)" = inactive ]'
check "socket /run/apnsd/apnsd.sock is root:apnsd 0660" is "root:apnsd:660" c stat -c %U:%G:%a /run/apnsd/apnsd.sock
check "systemd-analyze verify prints nothing" is "" c sh -c 'systemd-analyze verify apnsd.socket apnsd.service 2>&1'
exposure=$(c systemd-analyze security apnsd.service --no-pager | tail -n1 | sed -n 's/.*apnsd.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security: exposure ${exposure:-?} (at most 2.0)" \
	awk -v v="${exposure:-99}" 'BEGIN { exit !(v <= 2.0) }'

echo "== configure: the demo's APNs stand-ins and their throwaway credentials"
c systemd-run -q --unit=apnsd-standin -p PrivateTmp=no /usr/bin/apnsd -demo -socket /root/standin.sock
standin_conf() { c sh -c 'ls /tmp/apnsd-demo-*/apnsd.toml 2>/dev/null'; }
wait_for 20 standin_conf >/dev/null || true
conf=$(standin_conf || true)
check "stand-ins up (apnsd -demo as unit apnsd-standin)" test -n "$conf"
if [ -z "$conf" ]; then
	c journalctl -u apnsd-standin --no-pager | tail -n 20
	echo "test-systemd: cannot continue without the stand-ins" >&2
	exit 1
fi
demo=$(dirname "$conf")
c sh -c "cp $demo/*.pem /etc/apnsd/ && chown apnsd:apnsd /etc/apnsd/*.pem && chmod 0600 /etc/apnsd/*.pem &&
	sed -e 's|^path = .*|path = \"/run/apnsd/apnsd.sock\"|' -e 's|^mode = .*|mode = \"0660\"|' $conf >/etc/apnsd/apnsd.toml &&
	cp /etc/apnsd/apnsd.toml /root/good.toml && cp /etc/apnsd/production.pem /root/production.pem"
check "apnsd -check accepts the configuration" c apnsd -check -config /etc/apnsd/apnsd.toml

echo "== socket activation"
c useradd --system --no-create-home --groups apnsd apnsd-app
check "first connection (apnsctl ping) starts apnsd.service" bash -c '
	c apnsctl ping && [ "$(c systemctl show -P ActiveState apnsd.service)" = active ]'
check "apnsd uses the socket systemd passed" bash -c 'c journalctl -u apnsd -o cat | grep -q "socket activation: using the socket systemd passed"'
check "a member of group apnsd can send" c runuser -u apnsd-app -- apnsctl send -token a1b2c3d4e5f60718 -alert test-systemd
check "a user outside group apnsd cannot connect (exit 3)" bash -c 'c runuser -u nobody -- apnsctl ping; [ $? -eq 3 ]'
check "apnsd runs as apnsd:apnsd" is "apnsd:apnsd" bash -c 'c ps -o user=,group= -p "$(prop apnsd.service MainPID)" | awk "{print \$1 \":\" \$2}"'

echo "== Type=notify start and the Status: line"
c systemctl stop apnsd.service 2>/dev/null
run_cur=$(cursor)
check "systemctl start returns with apnsd running (READY=1)" bash -c '
	c systemctl start apnsd.service &&
	[ "$(c systemctl show -P SubState apnsd.service)" = running ] && c apnsctl ping'
check "Status: shows every connection up within 5s of start" wait_for 5 status_has "demo/sandbox up 1/1, demo/production up 1/1"
echo "      Status: $(status_text)"
check "systemctl status shows the Status: line" bash -c 'c systemctl status apnsd.service --no-pager | grep -E "^ +Status: \"demo/sandbox (up|down) [01]/1"'
c apnsctl send -token a1b2c3d4e5f60718 -alert counted >/dev/null || true
check "Status: counts a sent notification within 15s" wait_for 15 status_has "sent 1,"
check "sent to production through the service" c apnsctl send -env production -token a1b2c3d4e5f60718 -alert prod

echo "== stop"
check "systemctl stop: clean exit (Result=success)" bash -c '
	c systemctl stop apnsd.service && [ "$(c systemctl show -P Result apnsd.service)" = success ] &&
	[ "$(c systemctl show -P ExecMainStatus apnsd.service)" = 0 ]'
check "a clean start, sends and stop log no warning" is "" bash -c 'apnsd_log "$1" | at_most 4' sh "$run_cur"
check "socket still listening while apnsd is stopped" is listening prop apnsd.socket SubState

echo "== failed starts"
c sh -c 'echo garbage >/etc/apnsd/production.pem'
cur=$(cursor)
check "start with a broken certificate fails (exit 3)" bash -c '
	! c systemctl start apnsd.service && [ "$(c systemctl show -P ExecMainStatus apnsd.service)" = 3 ]'
check "Status: says why it cannot start" status_has "cannot start: "
check "the error is logged once, at priority err" bash -c '
	all=$(apnsd_log "$1" | grep -c "no CERTIFICATE PEM block")
	err=$(apnsd_log "$1" | at_most 3 | grep -c "no CERTIFICATE PEM block")
	echo "lines with the error: $all, at priority err or higher: $err"; [ "$all" = 1 ] && [ "$err" = 1 ]' sh "$cur"
c systemctl stop apnsd.service 2>/dev/null
c cp /root/production.pem /etc/apnsd/production.pem
c sh -c 'echo "bogus_key = 1" >>/etc/apnsd/apnsd.toml'
c systemctl reset-failed apnsd.service
cur=$(cursor)
check "start with an invalid config fails (exit 3)" bash -c '
	! c systemctl start apnsd.service && [ "$(c systemctl show -P ExecMainStatus apnsd.service)" = 3 ]'
check "the config error is logged at priority err" bash -c '
	apnsd_log "$1" | at_most 3 | grep -q "bogus_key" || { apnsd_log "$1"; false; }' sh "$cur"
check "Status: says why it cannot start (config error)" status_has "cannot start: "
c systemctl stop apnsd.service 2>/dev/null
c cp /root/good.toml /etc/apnsd/apnsd.toml
c systemctl reset-failed apnsd.service
check "starts again once fixed" c systemctl start apnsd.service

echo "== reload"
pid=$(prop apnsd.service MainPID)
cur=$(cursor)
check "systemctl reload succeeds, same MainPID, running" bash -c '
	c systemctl reload apnsd.service && [ "$(c systemctl show -P MainPID apnsd.service)" = "$1" ] &&
	[ "$(c systemctl show -P SubState apnsd.service)" = running ]' sh "$pid"
check "the reload went through apnsd (RELOADING=1 … READY=1)" bash -c '
	c journalctl -u apnsd --after-cursor="$1" -o cat | grep -q "^Reloaded apnsd.service" &&
	apnsd_log "$1" apnsctl | grep -q "\"MESSAGE\":\"reloaded"' sh "$cur"
# PID 1's debug log shows the sd_notify messages and its state changes.
c systemd-analyze log-level debug
cur=$(cursor)
c systemctl reload apnsd.service
c systemctl kill -s HUP apnsd.service
sleep 1
c systemd-analyze log-level info
notify_log() { c journalctl --after-cursor="$1" -o cat | grep -E "^apnsd.service: (Got notification message|Changed )"; }
export -f notify_log
check "systemctl reload: apnsd sends RELOADING=1, then READY=1" bash -c '
	notify_log "$1"; notify_log "$1" | grep -q "RELOADING=1" && notify_log "$1" | grep -q "READY=1"' sh "$cur"
check "SIGHUP (systemctl kill -s HUP) reloads too: reload -> running" bash -c '
	[ "$(notify_log "$1" | grep -c "RELOADING=1")" -ge 2 ] && [ "$(notify_log "$1" | grep -c "Changed reload -> running")" -ge 2 ] &&
	[ "$(c systemctl show -P SubState apnsd.service)" = running ]' sh "$cur"
c sh -c 'echo garbage >/etc/apnsd/production.pem'
check "systemctl reload fails for a broken certificate (it waits for the result)" bash -c '! c systemctl reload apnsd.service'
check "apnsd keeps running on the old certificate" bash -c '
	[ "$(c systemctl show -P MainPID apnsd.service)" = "$1" ] && c apnsctl send -env production -token a1b2c3d4e5f60718 -alert still' sh "$pid"
check "Status: shows (reload failed)" status_has "(reload failed)"
c cp /root/production.pem /etc/apnsd/production.pem
check "systemctl reload succeeds once fixed, Status: clean again" bash -c '
	c systemctl reload apnsd.service && ! status_has "(reload failed)"'
c sh -c "sed 's|^allow_uids = .*||; s|^\[socket\]|[socket]\nallow_uids = [0]|' /root/good.toml >/etc/apnsd/apnsd.toml"
c systemctl restart apnsd.service
check "systemctl reload works with socket.allow_uids = [0] (ExecReload runs as apnsd)" c systemctl reload apnsd.service
c cp /root/good.toml /etc/apnsd/apnsd.toml
c systemctl restart apnsd.service

echo "== watchdog (WatchdogSec=5s in a drop-in, to be quick)"
c mkdir -p /run/systemd/system/apnsd.service.d
c sh -c 'printf "[Service]\nWatchdogSec=5s\n" >/run/systemd/system/apnsd.service.d/watchdog.conf && systemctl daemon-reload'
c systemctl restart apnsd.service
pid=$(prop apnsd.service MainPID)
restarts=$(prop apnsd.service NRestarts)
sleep 6
check "a healthy apnsd keeps the watchdog fed" is "$pid $restarts" bash -c 'echo "$(c systemctl show -P MainPID apnsd.service) $(c systemctl show -P NRestarts apnsd.service)"'
c kill -STOP "$pid"
restarted() { [ "$(prop apnsd.service NRestarts)" -gt "$restarts" ] && [ "$(prop apnsd.service SubState)" = running ]; }
check "a hung apnsd (SIGSTOP) is killed and restarted" wait_for 30 restarted
check "journal says: watchdog timeout" bash -c 'c journalctl -u apnsd -o cat | grep -qi "watchdog timeout"'
c rm -r /run/systemd/system/apnsd.service.d
c systemctl daemon-reload
c systemctl restart apnsd.service

echo "== restart under load"
# $APNSD_LOAD_CLIENTS clients (4) send one notification per connection
# (apnsctl) in a loop while apnsd is restarted $APNSD_LOAD_RESTARTS times
# (3), 2.5s apart; every notification must be delivered.
clients=${APNSD_LOAD_CLIENTS:-4}
restarts_n=${APNSD_LOAD_RESTARTS:-3}
c sh -c 'rm -rf /root/load && mkdir /root/load'
load_pids=()
for i in $(seq "$clients"); do
	c sh -c "end=\$((\$(date +%s) + $((restarts_n * 5 / 2 + 4)))); n=0; bad=0
		while [ \$(date +%s) -lt \$end ]; do
			apnsctl -timeout 30s send -token a1b2c3d4e5f60718 -alert load$i >/dev/null 2>>/root/load/err$i || bad=\$((bad + 1))
			n=\$((n + 1))
		done
		echo \$n \$bad >/root/load/res$i" &
	load_pids+=($!)
done
before=$(prop apnsd.service NRestarts)
restart_ok=0
for _ in $(seq "$restarts_n"); do
	sleep 2.5
	c systemctl restart apnsd.service && restart_ok=$((restart_ok + 1))
done
wait "${load_pids[@]}" || true
total=$(c sh -c 'cat /root/load/res*' | awk '{n += $1; b += $2} END {print n + 0, b + 0}')
echo "      $clients clients sent ${total% *} notifications during $restarts_n restarts, ${total#* } not delivered"
check "$restarts_n restarts under load succeeded" test "$restart_ok" = "$restarts_n"
check "every notification sent during the restarts was delivered" bash -c '
	set -- $1; [ "$1" -gt 0 ] && [ "$2" = 0 ] || { c sh -c "sort /root/load/err* | uniq -c | head"; false; }' sh "$total"
check "restarts were not failures (NRestarts unchanged)" is "$before" prop apnsd.service NRestarts

echo "== LoadCredential= and \${CREDENTIALS_DIRECTORY}"
c sh -c 'install -d -m 0700 /etc/apnsd/private && install -m 0600 /root/production.pem /etc/apnsd/private/production.pem &&
	sed "s|^  cert_file = \"production.pem\"|  cert_file = \"\${CREDENTIALS_DIRECTORY}/production.pem\"|" /root/good.toml >/etc/apnsd/apnsd.toml &&
	mkdir -p /etc/systemd/system/apnsd.service.d &&
	printf "[Service]\nLoadCredential=production.pem:/etc/apnsd/private/production.pem\n" >/etc/systemd/system/apnsd.service.d/credentials.conf &&
	systemctl daemon-reload'
check "config names \${CREDENTIALS_DIRECTORY}/production.pem" c grep -qF 'cert_file = "${CREDENTIALS_DIRECTORY}/production.pem"' /etc/apnsd/apnsd.toml
check "apnsd starts with the credential systemd copied" bash -c '
	c systemctl restart apnsd.service && c apnsctl send -env production -token a1b2c3d4e5f60718 -alert cred'
check "the copy is in /run/credentials/apnsd.service, not readable by group apnsd" bash -c '
	m=$(c stat -c %a /run/credentials/apnsd.service/production.pem); echo "mode $m"; case $m in 400|440|600) ;; *) false ;; esac &&
	! c runuser -u apnsd-app -- cat /run/credentials/apnsd.service/production.pem'
check "apnsd -check without CREDENTIALS_DIRECTORY fails" bash -c '! c apnsd -check -config /etc/apnsd/apnsd.toml'
c apnsd -check -config /etc/apnsd/apnsd.toml 2>&1 | sed 's/^/      (without it) /' || true
check "CREDENTIALS_DIRECTORY=/etc/apnsd/private apnsd -check: OK" c env CREDENTIALS_DIRECTORY=/etc/apnsd/private apnsd -check -config /etc/apnsd/apnsd.toml
check "systemd-run -p LoadCredential=... apnsd -check (as apnsd): OK" c systemd-run -q --wait --pipe \
	-p LoadCredential=production.pem:/etc/apnsd/private/production.pem -p User=apnsd \
	/usr/bin/apnsd -check -config /etc/apnsd/apnsd.toml
c rm -r /etc/systemd/system/apnsd.service.d
c systemctl daemon-reload
c cp /root/good.toml /etc/apnsd/apnsd.toml
c systemctl restart apnsd.service

echo "== upgrade (dpkg -i over the running package)"
pid=$(prop apnsd.service MainPID)
check "dpkg -i while apnsd runs" c dpkg -i /root/apnsd.deb
check "postinst restarted apnsd (new MainPID, running)" bash -c '
	new=$(c systemctl show -P MainPID apnsd.service); echo "MainPID $1 -> $new"
	[ "$new" != "$1" ] && [ "$new" != 0 ] && [ "$(c systemctl show -P SubState apnsd.service)" = running ]' sh "$pid"
check "the admin's configuration survived the upgrade" c cmp /root/good.toml /etc/apnsd/apnsd.toml
check "apnsd answers after the upgrade" c apnsctl send -token a1b2c3d4e5f60718 -alert upgraded

echo "== dpkg -r"
c sh -c 'echo "not a key" >/etc/apnsd/private/admin-key.pem'
check "dpkg -r" c dpkg -r apnsd
check "apnsd is stopped" bash -c '! c pgrep -u apnsd -x apnsd'
check "units gone from systemd (daemon-reload ran), not masked" bash -c '
	for u in apnsd.service apnsd.socket; do s=$(c systemctl show -P LoadState $u); echo "$u: $s"; [ "$s" = not-found ] || exit 1; done'
check "socket file removed" bash -c '! c test -e /run/apnsd/apnsd.sock'
check "configuration kept" c test -f /etc/apnsd/apnsd.toml
check "dpkg -i again after remove: socket enabled and listening" bash -c '
	c dpkg -i /root/apnsd.deb >/dev/null && [ "$(c systemctl is-enabled apnsd.socket)" = enabled ] &&
	[ "$(c systemctl show -P SubState apnsd.socket)" = listening ] && c apnsctl ping'

echo "== dpkg --purge"
purge_out=$(c dpkg --purge apnsd 2>&1) || true
echo "$purge_out" | sed 's/^/      (dpkg) /'
check "purge keeps the files the admin added, and says so" bash -c '
	c test -f /etc/apnsd/private/admin-key.pem && printf "%s\n" "$1" | grep -q "/etc/apnsd/private/admin-key.pem"' sh "$purge_out"
check "purge removes apnsd.toml, /var/lib/apnsd, /run/apnsd" bash -c '
	! c test -e /etc/apnsd/apnsd.toml && ! c test -e /var/lib/apnsd && ! c test -e /run/apnsd'
check "no unit files or symlinks left" is "" c sh -c 'find /etc/systemd /usr/lib/systemd /lib/systemd -name "apnsd.*" 2>/dev/null'
check "systemd knows no apnsd unit" bash -c '
	for u in apnsd.service apnsd.socket; do [ "$(c systemctl show -P LoadState $u)" = not-found ] || exit 1; done'

echo
took=$(($(date +%s) - started))
if [ $fail -gt 0 ]; then
	echo "test-systemd: $fail FAILED, $pass passed (${took}s):"
	printf '  - %s\n' "${failed[@]}"
	exit 1
fi
echo "test-systemd: all $pass checks passed (${took}s)"
