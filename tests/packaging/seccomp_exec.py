"""Run a command under a seccomp filter built the way systemd builds the unit's SystemCallFilter=:
``seccomp_exec.py DEFAULT ALLOWED_FILE -- argv...`` allows the system calls listed (one a line) and
answers every other one with DEFAULT: "EPERM" (SystemCallErrorNumber=EPERM) or "KILL" (systemd's
default). Runs with Debian's python3 and its python3-seccomp."""

import errno
import os
import sys

import seccomp


def main() -> None:
    default, allowed_file, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv
    action = seccomp.ERRNO(errno.EPERM) if default == "EPERM" else seccomp.KILL_PROCESS
    flt = seccomp.SyscallFilter(defaction=action)
    for name in open(allowed_file).read().split():
        try:
            flt.add_rule(seccomp.ALLOW, name)
        except (ValueError, RuntimeError):
            pass  # a name this architecture has not got, as systemd skips it
    flt.load()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
