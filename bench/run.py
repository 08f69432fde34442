"""`make bench`: run the benchmarks, print a table per benchmark, write `<out>/results.json`.

    python -m bench.run --out bench-out                  # everything (~ a few minutes)
    python -m bench.run --only validate,help             # a subset
    python -m bench.run --only validate --quick          # smaller files, for a smoke run

Every baseline is measured in the same run, on the same machine, against the same kind of file,
so that the ratios are honest. A benchmark whose piece of the importer is missing is reported as
skipped with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("validate", "xlsx", "help", "sandbox", "post")


class Skipped(Exception):
    """A benchmark cannot run because a piece of the importer is not there yet."""


@dataclass(frozen=True)
class Proc:
    """One measured child process.

    Attributes:
        seconds: wall time from just before the spawn to the reaped exit.
        exit_code: the child's exit code (negative: killed by that signal).
        peak_rss_mb: the child's peak resident set (its own and its reaped children's), MiB.
        cpu_user: user CPU seconds of the child.
        cpu_sys: system CPU seconds of the child.
        log: where its stdout and stderr went.
    """

    seconds: float
    exit_code: int
    peak_rss_mb: float
    cpu_user: float
    cpu_sys: float
    log: str

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's output, for an error message."""
        text = Path(self.log).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def tool(name: str) -> str:
    """The path of a console script in the running virtualenv (`amili-import`)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise Skipped(f"{name} is not installed (run `make bench` or `pip install -e .`)")
    return found


# The measuring launcher (run with `python -S`, a few MiB). Linux carries a process's peak RSS
# across fork and exec: a child forked straight from this bench process (hundreds of MiB once
# pandas and the workbook are loaded) would report at least the bench's size, and so would
# getrusage(RUSAGE_CHILDREN). Forking from this small launcher instead, and reaping with wait4,
# gives exactly the measured command's own peak RSS and CPU.
_LAUNCHER = """
import json, os, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(report, "w") as fh:
    json.dump({"seconds": seconds, "exit_code": os.waitstatus_to_exitcode(status),
               "maxrss_kib": ru.ru_maxrss, "utime": ru.ru_utime, "stime": ru.ru_stime}, fh)
"""


def run_process(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> Proc:
    """Run `cmd` to its end and measure it exactly (wall time, peak RSS, CPU).

    A small launcher process forks and execs `cmd`, times it from the fork to the reaped exit
    and reads its rusage with `os.wait4`: exactly this command's figures (its reaped children
    included), unaffected by this process's size or by earlier children (see `_LAUNCHER`).

    Args:
        cmd: the command.
        log: file receiving stdout and stderr.
        env: extra environment variables (added to this process's environment).
        cwd: working directory.

    Returns:
        The measurement.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    figures = log.with_name(log.name + ".rusage.json")
    figures.unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        # Own session, so that an interrupted bench can stop the command with the launcher.
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(figures), *cmd],
                                stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                start_new_session=True)
        try:
            proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if not figures.exists():
        raise RuntimeError(f"could not measure {cmd[0]} (launcher exit {proc.returncode}); "
                           f"see {log}")
    data = json.loads(figures.read_text())
    return Proc(seconds=data["seconds"], exit_code=data["exit_code"],
                peak_rss_mb=data["maxrss_kib"] / 1024, cpu_user=data["utime"],
                cpu_sys=data["stime"], log=str(log))


def goal(name: str, value: float | None, target: float, higher_is_better: bool = True,
         unit: str = "") -> dict[str, Any]:
    """One goal line: the measured value against its target.

    Args:
        name: what is measured.
        value: the measurement (None: not measured).
        target: the goal.
        higher_is_better: whether the value must be at least (True) or at most the target.
        unit: unit shown after the numbers.

    Returns:
        A dict with `met` True/False (None when not measured).
    """
    met = None if value is None else (value >= target if higher_is_better else value <= target)
    return {"goal": name, "value": value, "target": target,
            "op": ">=" if higher_is_better else "<=", "unit": unit, "met": met}


def fmt(value: Any) -> str:
    """A table cell: numbers rounded sensibly, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def _numeric(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return cell == "-"
    return True


def table(title: str, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of `rows` (dicts) under a title."""
    if not rows:
        return f"\n{title}\n  (nothing measured)\n"
    cols = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [f"\n{title}", line, "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w)
                             for v, w in zip(row, widths, strict=True)))
    return "\n".join(out) + "\n"


def goals_table(goals: list[dict[str, Any]]) -> str:
    """The goal lines of every benchmark, with met / MISSED / not measured."""
    rows = [{"goal": g["goal"], "measured": g["value"],
             "target": f"{g['op']} {fmt(g['target'])} {g['unit']}".strip(),
             "result": {True: "met", False: "MISSED", None: "not measured"}[g["met"]]}
            for g in goals]
    return table("Goals", rows)


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "load_average_at_start": os.getloadavg()}


def _benchmark(name: str) -> Callable[..., dict[str, Any]]:
    # Imported on demand so that `--only help` does not pay for pandas and friends.
    if name == "validate":
        from bench import validate_bench
        return validate_bench.run
    if name == "xlsx":
        from bench import xlsx_bench
        return xlsx_bench.run
    if name == "help":
        return help_bench
    if name == "sandbox":
        return sandbox_bench
    from bench import post_bench
    return post_bench.run


def help_bench(out: Path, quick: bool = False) -> dict[str, Any]:
    """Wall time of `amili-import --help`, median of 5 fresh processes (after one warm-up).

    Args:
        out: the output folder.
        quick: unused (the benchmark is already quick).

    Returns:
        The result dict (`rows`, `goals`).
    """
    cmd = [tool("amili-import"), "--help"]
    run_process(cmd, out / "help" / "warmup.log")  # the first run pays for cold .pyc and page cache
    runs = [run_process(cmd, out / "help" / f"run{i}.log") for i in range(5)]
    if any(r.exit_code for r in runs):
        raise RuntimeError(f"amili-import --help failed:\n{runs[0].tail()}")
    times = sorted(r.seconds for r in runs)
    median = times[len(times) // 2]
    rows = [{"command": "amili-import --help", "median_s": median, "min_s": times[0],
             "max_s": times[-1], "peak_rss_mb": max(r.peak_rss_mb for r in runs)}]
    return {"rows": rows, "goals": [goal("--help wall time (median of 5)", median, 0.5,
                                         higher_is_better=False, unit="s")]}


def sandbox_bench(out: Path, quick: bool = False) -> dict[str, Any]:
    """POST/s the sandbox sustains with no added latency, via `bench.sandbox_load.measure`.

    Args:
        out: the output folder.
        quick: a shorter measurement.

    Returns:
        The result dict: whatever `measure()` reports, as rows.
    """
    try:
        from bench import sandbox_load  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        raise Skipped(f"bench/sandbox_load.py is not there yet ({exc})") from None
    measure = getattr(sandbox_load, "measure", None)
    if measure is None:
        raise Skipped("bench/sandbox_load.py has no measure() yet")
    import inspect

    quick_args = {"seconds": 2.0} if quick and "seconds" in inspect.signature(measure).parameters \
        else {}
    result = measure(**quick_args)
    data = asdict(result) if hasattr(result, "__dataclass_fields__") else result
    if not isinstance(data, dict):
        data = {"result": data}
    rows = data.get("rows") if isinstance(data.get("rows"), list) else [
        {k: v for k, v in data.items() if not isinstance(v, dict | list)}]
    return {"rows": rows, "raw": data, "goals": []}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks; print their tables; write results.json.

    Returns:
        0 when every chosen benchmark ran (goals met or not; `--strict` makes a missed goal 1),
        1 when one failed, 2 when one was skipped for a missing piece and `--strict` is given.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out"),
                        help="output folder (generated data is cached under OUT/data)")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, for checking the harness itself")
    parser.add_argument("--strict", action="store_true",
                        help="exit non-zero when a goal is missed or a benchmark skipped")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(BENCHMARKS)}")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": _machine(), "quick": args.quick, "benchmarks": {}}
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: other work is "
              "running, the figures will be low and noisy", file=sys.stderr)
    failed = skipped = False
    every_goal: list[dict[str, Any]] = []
    for name in chosen:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            result = _benchmark(name)(out, quick=args.quick)
        except Skipped as exc:
            skipped = True
            result = {"skipped": str(exc)}
            print(f"\n{name}: SKIPPED: {exc}")
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith(("importer", "bench")):
                skipped = True  # a module of the importer that is still being written
                result = {"skipped": f"a piece is missing: {exc}"}
                print(f"\n{name}: SKIPPED: {exc}")
            else:
                failed = True
                result = {"failed": f"{type(exc).__name__}: {exc}"}
                print(f"\n{name}: FAILED: {type(exc).__name__}: {exc}")
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed = True
            result = {"failed": f"{type(exc).__name__}: {exc}"}
            print(f"\n{name}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
        result["seconds"] = round(time.perf_counter() - start, 1)
        results["benchmarks"][name] = result
        for title, rows in result.get("tables", {}).items():
            print(table(f"{name}: {title}", rows))
        if "rows" in result:
            print(table(f"{name}", result["rows"]))
        if result.get("partial"):
            print(f"  PARTLY SKIPPED: {result['partial']}")
        for note in result.get("notes", []):
            print(f"  note: {note}")
        every_goal.extend(result.get("goals", []))
        sys.stdout.flush()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["goals"] = every_goal
    print(goals_table(every_goal))
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {path}")
    if failed:
        return 1
    if args.strict and (skipped or any(g["met"] is not True for g in every_goal)):
        return 2
    return 0


if __name__ == "__main__":
    # Run the copy imported as `bench.run`, so that the benchmarks' `Skipped` (imported from
    # bench.run) is the class caught here, not a twin defined in `__main__`.
    from bench.run import main as _main

    sys.exit(_main())
