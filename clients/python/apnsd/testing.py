"""Helpers for tests that need a real apnsd: run it in demo mode.

    with DemoDaemon() as daemon:          # binary from $APNSD_BIN or <repo>/bin/apnsd
        client = apnsd.Client(daemon.socket_path)

Demo mode (``apnsd -demo -socket PATH``) runs local APNs stand-ins with
throwaway certificates and one app "demo" (topic "com.example.demo").
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["DemoDaemon", "default_binary", "DaemonStartError"]


class DaemonStartError(RuntimeError):
    pass


def default_binary():
    """$APNSD_BIN, else <repo>/bin/apnsd (repo = two levels above clients/python)."""
    env = os.environ.get("APNSD_BIN")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))          # clients/python/apnsd
    repo = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    return os.path.join(repo, "bin", "apnsd")


def _die_with_parent():
    """Linux: SIGTERM the daemon if the test process dies without stopping it
    (e.g. killed by a timeout), so no demo daemon is left behind."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def _ping(path, timeout=1.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(b'{"op":"ping","id":"ready"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                return False
            data += chunk
        obj = json.loads(data.decode("utf-8"))
        return obj.get("ok") is True and obj.get("pong") is True
    except (OSError, ValueError):
        return False
    finally:
        s.close()


class DemoDaemon(object):
    """Start ``apnsd -demo -socket PATH``; wait until it answers ping."""

    def __init__(self, binary=None, socket_path=None, start_timeout=20.0, extra_args=(),
                 listener=None):
        self.binary = binary or default_binary()
        self._tmpdir = None
        if socket_path is None:
            # short path: AF_UNIX paths are limited to ~107 bytes
            self._tmpdir = tempfile.mkdtemp(prefix="apnsd-py-")
            socket_path = os.path.join(self._tmpdir, "apnsd.sock")
        self.socket_path = socket_path
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        #: A listening socket to hand to apnsd by socket activation
        #: (LISTEN_FDS=1, as systemd's apnsd.socket does), or None.  The
        #: caller keeps it open across restarts, so that connections made
        #: while no apnsd runs wait in its backlog instead of failing.
        self.listener = listener
        self.process = None
        self.log_path = None
        self._log = None

    def start(self):
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise DaemonStartError(
                "apnsd binary not found at %s: build it with "
                "`cd <repo> && go build -o bin/apnsd ./cmd/apnsd` or set APNSD_BIN" % self.binary)
        logdir = self._tmpdir or os.path.dirname(self.socket_path)
        self.log_path = os.path.join(logdir, "apnsd-demo.log")
        self._log = open(self.log_path, "ab")
        argv = [self.binary, "-demo", "-socket", self.socket_path] + self.extra_args
        if self.listener is None:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent)
        else:
            # sh puts the socket on fd 3 and sets LISTEN_PID to its own pid,
            # which exec keeps; no preexec_fn (the caller may run threads).
            fd = self.listener.fileno()
            setpriv = shutil.which("setpriv")
            script = ('LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=apnsd.socket '
                      'exec %s"$0" "$@" 3<&%d'
                      % ("%s --pdeathsig TERM -- " % setpriv if setpriv else "", fd))
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", script] + argv, pass_fds=(fd,),
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DaemonStartError("apnsd exited with status %s during startup:\n%s"
                                       % (self.process.returncode, self.log_tail()))
            if os.path.exists(self.socket_path) and _ping(self.socket_path,
                                                          timeout=1.0 if self.listener is None else 2.0):
                return self
            time.sleep(0.1)
        self.stop()
        raise DaemonStartError("apnsd did not answer ping on %s within %ss:\n%s"
                               % (self.socket_path, self.start_timeout, self.log_tail()))

    def log_tail(self, limit=4000):
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        """SIGTERM, wait, then SIGKILL if needed.  Returns the exit status."""
        proc, self.process = self.process, None
        status = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            status = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        return status

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
