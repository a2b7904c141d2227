#!/usr/bin/env python3
"""Stand-in for ``apnsd -demo -socket PATH`` built on the fake daemon.

Only for checking the integration-test harness itself while the real daemon
does not exist yet:  APNSD_BIN=tests/fake_apnsd_bin.py python3 -m unittest tests.test_integration
It is NOT a substitute for the real integration run.
"""
import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.fake_daemon import FakeDaemon  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-demo", action="store_true")
    p.add_argument("-socket", required=True)
    args = p.parse_args()
    if not args.demo:
        p.error("only -demo is supported")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    d = FakeDaemon(args.socket)
    d.require_content = True
    d.start()
    done.wait()
    d.stop()


if __name__ == "__main__":
    main()
