"""Bad input on a command line, said the same way by every command of the package: one line on
stderr, ``<command>: error: <problem>``, and exit code 2. No imports from the package, so the light
commands (perfmon-check, mixin) stay light."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Optional, TextIO

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command's input the operator must fix; str() is what we print."""


class UsageParser(argparse.ArgumentParser):
    """argparse's parser, but a bad argument raises UsageError instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: operators grep logs for it.
        raise UsageError(message)


def one_line(message: str) -> str:
    """``message`` with every run of white space, line breaks included, folded to one space."""
    return " ".join(message.split())


def fail(command: str, problem: object, err: Optional[TextIO] = None) -> int:
    """Print ``<command>: error: <problem>`` on one line and return EXIT_USAGE."""
    (err or sys.stderr).write("%s: error: %s\n" % (command, one_line(str(problem))))
    return EXIT_USAGE
