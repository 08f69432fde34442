"""One error base, a few meaningful subclasses, and the exit codes the CLI maps them to."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; a monitoring system alerts on anything but OK."""

    OK = 0  # every row valid/completed or warning
    ROWS_IN_ERROR = 1  # the run finished, some rows are in error
    USAGE = 2  # the command line was wrong
    CANNOT_RUN = 3  # a file was rejected whole, or the run could not start


class ImporterError(Exception):
    """Base of every error the CLI turns into a one-line message (never a traceback)."""

    exit_code: ExitCode = ExitCode.CANNOT_RUN


class UsageError(ImporterError):
    """The command line or configuration asks for something impossible."""

    exit_code = ExitCode.USAGE


class ConfigError(ImporterError):
    """Configuration is missing or invalid (file, environment or flags)."""

    exit_code = ExitCode.CANNOT_RUN


class FileRejected(ImporterError):
    """A whole input file is unusable; nothing from it is posted.

    Args:
        file: the file's name as the user gave it.
        message: what is wrong, naming the row and column where there is one.
    """

    def __init__(self, file: str, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = file
        self.reason = message


class RunLocked(ImporterError):
    """Another run holds the lock on the same folder or state directory."""


class ApiError(ImporterError):
    """The API could not be used at all (login refused, unreachable after retries)."""


class TransientApiError(ApiError):
    """A failure that may succeed if tried again later (network, 429, 502/503/504)."""


# SIGTERM / Ctrl-C in this process (set by the CLI's handler, which also raises
# KeyboardInterrupt). Library code with a bare ``except:`` (some run while pandas or pandera
# is imported) can swallow that KeyboardInterrupt: the run then checks this between chunks.
_interrupt_seen = False


def note_interrupt() -> None:
    """Remember that the process was asked to stop."""
    global _interrupt_seen
    _interrupt_seen = True


def forget_interrupt() -> None:
    """Start an invocation afresh (tests run several in one process)."""
    global _interrupt_seen
    _interrupt_seen = False


def interrupt_seen() -> bool:
    """Whether the process was asked to stop (SIGTERM, Ctrl-C)."""
    return _interrupt_seen


def stop_if_interrupted() -> None:
    """Raise KeyboardInterrupt when the process was asked to stop, even if the one raised by
    the signal handler was swallowed on the way.

    Raises:
        KeyboardInterrupt: the process was asked to stop.
    """
    if _interrupt_seen:
        raise KeyboardInterrupt
