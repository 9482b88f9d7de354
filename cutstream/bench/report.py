"""`make bench`: run every benchmark section and rewrite its block in BENCHMARKS.md.

Each section module exposes ``markdown_report(quick: bool) -> str``; the text replaces what stands
between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``. A section that fails keeps
its old text and the run exits non-zero. The sections of ``ON_REQUEST`` (the labelled suite:
``make eval``) run only when ``--only`` names them.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import re
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

#: section name → module with markdown_report(); in the order they run.
SECTIONS: dict[str, str] = {
    "engine": "cutstream.bench.engine",
    "nab": "cutstream.bench.nab",
    "ingest": "cutstream.bench.ingest",
    "backfill": "cutstream.bench.backfill",
    "checkpoint": "cutstream.bench.checkpoint",
    "dashboard": "cutstream.bench.dashboard",
    "scaleout": "cutstream.bench.scaleout",
    "cardinality": "cutstream.bench.cardinality",
    "eval": "cutstream.bench.evaluation",
}
#: Sections that run only when named (``--only``): each has its own make target.
ON_REQUEST = {"eval": "make eval"}


def machine_line() -> str:
    import os

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name}:start -->\n).*?(<!-- bench:{name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"BENCHMARKS.md has no block for section {name!r}")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--file", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)
    replace_block(args.file.read_text(), "engine", "")  # fail early on a file without the markers
    failed = []
    for name, module in SECTIONS.items():
        if args.only is not None and name not in args.only:
            continue
        if args.only is None and name in ON_REQUEST:
            print(f"== bench {name}: not run ({ON_REQUEST[name]} runs it)", file=sys.stderr, flush=True)
            continue
        print(f"== bench {name}", file=sys.stderr, flush=True)
        try:
            body = importlib.import_module(module).markdown_report(quick=args.quick)
        except Exception:  # report every failing section, keep the others
            traceback.print_exc()
            failed.append(name)
            continue
        # re-read: another section (or person) may have changed the file while this one ran
        text = replace_block(args.file.read_text(), name, f"Machine: {machine_line()}\n\n{body}")
        args.file.write_text(text)
    if failed:
        print(f"failed sections: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
