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
