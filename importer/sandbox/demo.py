"""`make demo`: start the sandbox, import the samples, print the summary and the report path.

Runs the real `run` pipeline against the local sandbox over HTTP, then runs the same files a
second time to show that nothing is posted twice. The sandbox lives only as long as this process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from importer.config import Config
from importer.pipeline import Mode, RunOptions, execute
from importer.sandbox.server import SandboxOptions, start
from importer.sandbox.store import load_cases_file

DEMO_TOKEN = "demo-access-token"  # the sandbox's fixed token; not a secret
SAMPLE_SUFFIXES = {".csv", ".xlsx"}


def sample_files(folder: Path) -> list[Path]:
    """The importable sample files, in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 when both runs completed (rows in error are expected)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, default=Path("samples"))
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)  # a fresh sandbox needs a fresh journal
    cases, codes = load_cases_file(args.samples / "cases.json")
    files = sample_files(args.samples)
    with start(SandboxOptions(port=0, cases=cases, api_codes=codes, token=DEMO_TOKEN)) as box:
        print(f"sandbox running at {box.url}", file=sys.stderr)
        config = Config(api_url=box.url, access_token=DEMO_TOKEN, state_dir=args.out / "state",
                        log_format="console")
        first = execute(files, config, Mode.RUN, RunOptions(report_dir=args.out / "report"))
        stored = box.state.snapshot()["records"]
        again = execute(files, config, Mode.RUN, RunOptions(report_dir=args.out / "report-again"))
        stored_again = box.state.snapshot()["records"]
    print("\n== amili-import demo: samples imported into the local sandbox ==")
    first.summary.report_dir = first.report_dir
    for line in first.summary.summary_lines():
        print(line)
    print(f"exit code: {int(first.exit_code)} (the samples hold deliberate mistakes)")
    print(f"records stored in the sandbox: {stored}")
    grew = {k: stored_again[k] - n for k, n in stored.items() if stored_again[k] != n}
    print(f"\nsame files again: {again.extra.get('posted', 0)} rows sent again (only rows that "
          f"Amili had rejected, so nothing was stored from them); records added: {grew or 'none'}"
          f" -> nothing was posted twice. Report: {again.report_dir}")
    print(f"\nopen the report: {first.report_dir / 'report.xlsx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
