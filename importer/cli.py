"""Command line: parse options → build a typed config → call one function → map errors.

Heavy libraries (pandas, pandera, requests) are imported inside the commands that need them,
so ``amili-import --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from importer.errors import (
    ExitCode,
    ImporterError,
    forget_interrupt,
    interrupt_seen,
    note_interrupt,
)

F = TypeVar("F", bound=Callable[..., Any])
KIND_CHOICE = click.Choice(["payments", "creditings", "credits", "cancellations"],
                           case_sensitive=False)


def _fail(message: str, code: int) -> None:
    """Say why the command ends (one line, and a JSON line for machines) and exit with
    ``code``."""
    import structlog

    from importer import logs

    ctx = click.get_current_context(silent=True)
    log_format = ((ctx.find_root().obj or {}).get("log_format") if ctx else None) or "auto"
    if logs.wants_json(log_format):
        # A JSON line too, so that a log read by machines says why the command ended (a lock
        # held, an SFTP host key refused…), not only the runs that got going.
        logs.configure(log_format)
        structlog.get_logger().error("command.failed", error=message, exit_code=int(code),
                                     command=ctx.info_name if ctx else None)
    click.echo(f"amili-import: {message}", err=True)
    sys.exit(int(code))


_INTERRUPTED = "interrupted; rows in flight are reconciled on the next run"


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM and Ctrl-C: raise KeyboardInterrupt (as Python's own handler does), noted."""
    note_interrupt()
    raise KeyboardInterrupt


def entry() -> None:
    """The ``amili-import`` process: :func:`main`, then its exit code.

    After an interrupt the process ends at once with that code, past the interpreter's own
    shutdown, once stdout and stderr are flushed (everything of ours: report temp files,
    journal, locks, run.log, was closed on the way). Python 3.11 turns an exit after an
    interrupt that landed in ``exec``'d code (a dataclass being made while pandera is
    imported) into a death by SIGINT, and a half-imported extension can crash while the
    interpreter shuts down: either would hide the exit code 3 that cron reads.
    """
    # Whatever cannot be said on stderr (cron's log on a full disk, a closed pipe) is lost,
    # but must not change what the run does or the exit code it ends with.
    sys.stderr = _Unfailing(sys.stderr)
    try:
        main()
    except SystemExit as exc:
        if interrupt_seen() and isinstance(exc.code, int):
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # a closed pipe
                    stream.flush()
            os._exit(exc.code)
        raise


class _Unfailing:
    """A text stream whose writes and flushes never raise OSError (the text is dropped)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError):
            return int(self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def handle_errors(func: F) -> F:
    """The one place where errors become a message and an exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except ImporterError as exc:
            if debug:
                raise
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            note_interrupt()  # also one raised by the posting's own handler (see entry)
            _fail(_INTERRUPTED, ExitCode.CANNOT_RUN)
        except BrokenPipeError:  # `amili-import runs | head`: the reader has had enough
            # Python's advice: point stdout at devnull so that the exit's flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(int(ExitCode.OK))
        except OSError as exc:  # disk full, permissions, a folder gone: the system's words
            if debug:
                raise
            if interrupt_seen():  # the stop, wrapped or turned into another error
                _fail(_INTERRUPTED, ExitCode.CANNOT_RUN)
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            _fail(f"{exc.strerror or exc}{where}; nothing more was posted, rows in flight are "
                  "reconciled on the next run", ExitCode.CANNOT_RUN)
        except Exception as exc:  # a bug: one line for the user, the traceback with --debug
            if debug:
                raise
            if interrupt_seen():
                # The stop, wrapped: Python turns a KeyboardInterrupt raised while a class is
                # made (pandera's, during its import) into a RuntimeError ("Error calling
                # __set_name__"); library code may turn it into other errors too.
                _fail(_INTERRUPTED, ExitCode.CANNOT_RUN)
            if type(exc).__module__ == "sqlite3":  # the journal: disk full, locked, read-only
                _fail(f"the journal in the state directory cannot be used ({exc}); nothing "
                      "more was posted, rows in flight are reconciled on the next run",
                      ExitCode.CANNOT_RUN)
            _fail(f"unexpected error ({type(exc).__name__}: {exc}); run again with --debug "
                  "for the traceback", ExitCode.CANNOT_RUN)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="amili-import")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML config file (default: $AMILI_CONFIG, ~/.config/amili-import/config.toml).")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where the journal, runs and reports live (env AMILI_STATE_DIR).")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default=None,
              help="Log lines on stderr: JSON lines (default when not on a terminal) or console.")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, state_dir: Path | None,
         log_format: str | None, debug: bool) -> None:
    """Import creditor payments, creditings and cancellations from CSV/Excel into Amili."""
    # Arrow's default allocator keeps freed chunk buffers mapped; the system allocator hands
    # them back, which keeps the peak memory of a large file flat (measured: ~480 -> ~380 MB
    # at 1M rows). Read by pyarrow when it is first imported; an explicit setting wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    # SIGTERM (systemctl stop, kill) ends a run as Ctrl-C does: the posting lets the requests
    # in flight finish; elsewhere the run stops with exit 3 and its temp files removed.
    forget_interrupt()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    ctx.obj = {"config_file": config_file, "state_dir": state_dir, "log_format": log_format}


def read_options(func: F) -> F:
    """Options shared by every command that reads input files."""
    func = click.option("--kind", type=KIND_CHOICE,
                        help="Kind of every file (default: from the file or sheet name).")(func)
    func = click.option("--encoding", help="CSV encoding (default: BOM, UTF-8, then cp1252).")(func)
    func = click.option("--delimiter", help="CSV delimiter (default: sniffed among , ; tab).")(func)
    func = click.option("--default-creditor",
                        help="Creditor id for files without a creditor column.")(func)
    func = click.option("--report-dir", type=click.Path(path_type=Path, file_okay=False),
                        help="Write report.json/.csv/.xlsx here (default: a new folder per run "
                             "under the state directory).")(func)
    return func


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
@read_options
@click.pass_context
@handle_errors
def validate(ctx: click.Context, files: tuple[Path, ...], **options: Any) -> None:
    """Validate FILES and write a file-import report; nothing is posted."""
    from importer.pipeline import Mode, run_files

    config = _config(ctx, options)
    sys.exit(int(run_files(list(files), config, Mode.VALIDATE, _run_options(options))))


@main.command()
@click.argument("kind", type=KIND_CHOICE)
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="xlsx",
              show_default=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write (default: KIND-template.FORMAT here).")
@handle_errors
def template(kind: str, fmt: str, output: Path | None) -> None:
    """Write a blank template for KIND (header, hints, one example row)."""
    from importer.kinds import kind_by_name
    from importer.template import write_template

    chosen = kind_by_name(kind)
    path = write_template(chosen, fmt, output or Path(f"{chosen.name}-template.{fmt}"))
    click.echo(str(path))


def post_options(func: F) -> F:
    """Options shared by every command that posts to the API."""
    func = click.option("--api-url", help="Amili API base URL (env AMILI_API_URL).")(func)
    func = click.option("--concurrency", type=click.IntRange(1, 256),
                        help="Cases posted in parallel (default 8).")(func)
    func = click.option("--rate-limit", type=click.FloatRange(min=0.1),
                        help="At most this many requests in any one-second window.")(func)
    func = click.option("--allow-duplicates", is_flag=True,
                        help="Post a row even if an identical one came from another file.")(func)
    func = click.option("--allow-http", is_flag=True,
                        help="Allow plain http:// to a host other than this machine.")(func)
    return func


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
@read_options
@post_options
@click.option("--dry-run", is_flag=True, help="Validate and plan; post nothing.")
@click.pass_context
@handle_errors
def run(ctx: click.Context, files: tuple[Path, ...], dry_run: bool, **options: Any) -> None:
    """Validate FILES, post the valid rows exactly once, and write the report."""
    from importer.pipeline import Mode, run_files

    config = _config(ctx, options)
    mode = Mode.DRY_RUN if dry_run else Mode.RUN
    sys.exit(int(run_files(list(files), config, mode, _run_options(options))))


@main.command()
@click.argument("target")
@read_options
@post_options
@click.option("--min-age", type=click.FloatRange(min=0),
              help="Leave files younger than this many seconds for the next run "
                   "(default 60; inbox_min_age).")
@click.option("--require-sidecar", is_flag=True, default=None,
              help="Take only files that have a NAME.done or NAME.ok beside them "
                   "(inbox_require_sidecar).")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False),
              help="SSH private key for sftp:// folders.")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
              help="known_hosts file for sftp:// (default ~/.ssh/known_hosts).")
@click.option("--accept-new-host-key", is_flag=True,
              help="Trust and record an unknown SSH host key (never a changed one).")
@click.option("--pickup", help="For an sftp:// inbox: a path on the same server (e.g. "
              "/pickup) that receives each run's report files.")
@click.pass_context
@handle_errors
def inbox(ctx: click.Context, target: str, min_age: float | None, require_sidecar: bool | None,
          identity: Path | None, known_hosts: Path | None, accept_new_host_key: bool,
          pickup: str | None, **options: Any) -> None:
    """Drain a drop folder (DIR or sftp://user@host[:port]/path): one run per ready file.

    Ready files are moved to done/ (no row in error) or failed/ with a timestamped name; each
    run's report goes to DIR/reports/<run-id>/. The exit code is the worst of the files.
    """
    from importer.errors import UsageError
    from importer.inbox import InboxOptions, inbox_main

    if options.get("report_dir") is not None:
        raise UsageError("--report-dir does not apply to inbox: each file's report goes to "
                         "DIR/reports/<run-id>/ (for sftp://, see --pickup)")
    config = _config(ctx, {**options, "inbox_min_age": min_age,
                           "inbox_require_sidecar": require_sidecar})
    opts = InboxOptions(min_age=config.inbox_min_age,
                        require_sidecar=config.inbox_require_sidecar, identity=identity,
                        known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                        pickup=pickup, run=_run_options(options))
    sys.exit(int(inbox_main(target, config, opts)))


@main.command()
@click.argument("run_ref", metavar="RUN_ID")
@post_options
@click.option("--report-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write the new run's report here.")
@click.pass_context
@handle_errors
def retry(ctx: click.Context, run_ref: str, **options: Any) -> None:
    """Re-post the rows of run RUN_ID (or its report folder) that failed for transient reasons.

    Rows whose outcome was lost are read back from Amili first; rows rejected by validation or by
    Amili are not retried: fix them in the failed-rows file and use `amili-import run`.
    """
    from importer.pipeline import retry_run

    config = _config(ctx, options)
    sys.exit(int(retry_run(run_ref, config, _run_options(options))))


@main.command()
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_context
@handle_errors
def runs(ctx: click.Context, limit: int) -> None:
    """List recent runs: id, start time, mode, files, rows per status, exit code."""
    from importer.history import run_lines

    for line in run_lines(_config(ctx, {}), limit):
        click.echo(line)


@main.command()
@click.argument("run_ref", metavar="RUN_ID")
@click.pass_context
@handle_errors
def show(ctx: click.Context, run_ref: str) -> None:
    """Print one run's summary, its files, and where its report is."""
    from importer.history import show_lines

    for line in show_lines(_config(ctx, {}), run_ref):
        click.echo(line)


def _config(ctx: click.Context, options: dict[str, Any]) -> Any:
    from importer.config import load_config

    root = ctx.find_root().obj or {}
    names = {"default_creditor", "encoding", "delimiter", "api_url", "concurrency",
             "rate_limit", "allow_duplicates", "allow_http", "inbox_min_age",
             "inbox_require_sidecar"}
    # A flag left off is None (or False for on/off flags); 0 is a value (--min-age 0).
    flags = {k: v for k, v in options.items() if k in names and v is not None and v is not False}
    return load_config(root.get("config_file"), state_dir=root.get("state_dir"),
                       log_format=root.get("log_format"), **flags)


def _run_options(options: dict[str, Any]) -> Any:
    from importer.pipeline import RunOptions

    kind = options.get("kind")
    return RunOptions(kind=kind.lower() if kind else None, report_dir=options.get("report_dir"))


@main.command()
@click.option("--api-url", help="Amili API base URL (env AMILI_API_URL).")
@click.option("--allow-http", is_flag=True,
              help="Allow plain http:// to a host other than this machine.")
@click.pass_context
@handle_errors
def doctor(ctx: click.Context, **options: Any) -> None:
    """Check configuration, key file, login, API access and the state directory.

    Prints one line per check (ok / warn / FAIL); exits 0 when nothing failed, else 3.
    """
    from importer.doctor import config_sources, run_doctor

    root = ctx.find_root().obj or {}
    given = [k for k, v in options.items() if v is not None and v is not False]
    given += [k for k in ("state_dir", "log_format") if root.get(k) is not None]
    sources = config_sources(root.get("config_file"), given)
    sys.exit(int(run_doctor(lambda: _config(ctx, options), sources, click.echo)))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", default=8080, show_default=True, help="TCP port (0: any free port).")
@click.option("--cases", type=click.Path(path_type=Path, dir_okay=False),
              help="Seed cases JSON ({\"cases\": [...], \"api_codes\": {...}}).")
@click.option("--token", help="Fixed access token (default: a random one, printed).")
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(path_type=Path),
              help="PEM public key accepted for JWT login (repeatable; EC or RSA).")
@click.option("--api-code", "api_codes", multiple=True, help="Accept this API code (repeatable).")
@click.option("--token-lifetime", default=3600.0, show_default=True, help="Token seconds.")
@click.option("--latency-ms", default=0.0, help="Added latency per API request.")
@click.option("--fail-503", default=0.0, help="Share of POSTs answered 503 before storing.")
@click.option("--fail-429", default=0.0, help="Share of POSTs answered 429 before storing.")
@click.option("--retry-after", type=float, help="Retry-After seconds on 503/429 (default: none).")
@click.option("--fail-500-after-store", default=0.0, help="Share stored, then answered 500.")
@click.option("--drop-after-store", default=0.0, help="Share stored, then connection dropped.")
@click.option("--rate-limit", type=int, help="429 above this many POSTs per second.")
@click.option("--faults-on-gets", is_flag=True, help="Apply the faults to GETs too.")
@click.option("--seed", type=int, help="Seed of the fault draws (replayable runs).")
@click.option("--return-status-fields", is_flag=True,
              help="Also return status, status_reason_locale, settled_amount, ... in the 201.")
@handle_errors
def sandbox(**flags: Any) -> None:
    """Run a local Amili API on loopback until Ctrl+C (see importer/sandbox/README.md).

    Prints AMILI_API_URL, AMILI_ACCESS_TOKEN and AMILI_ALLOW_HTTP lines on stdout.
    """
    from importer.sandbox.cli import SandboxFlags, run

    run(SandboxFlags(**flags))


if __name__ == "__main__":  # pragma: no cover
    main()
