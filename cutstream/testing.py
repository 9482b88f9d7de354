"""Test entry points that ship with the package (not part of the ``cutstream`` command).

``python -m cutstream.testing worker --fault <point>:<n> <cutstream worker options>`` runs the
worker command with a ``streams.testing.KillAt`` sensor, which SIGKILLs the process the n-th time
the worker passes ``point`` (``after-parquet`` or ``after-checkpoint``): the exactly-once test kills
workers at the delicate points of the flush protocol that way. Fault injection is a test sensor,
never a setting of the production worker.
"""

from __future__ import annotations

from typing import Any

import click

from cutstream.cli import main as cutstream_main
from cutstream.cli_streams import run_worker
from cutstream.cli_streams import worker as worker_command


@click.group()
def main() -> None:
    """cutstream's test entry points."""
    cutstream_main.callback(verbose=0)  # type: ignore[misc]  # the same logging as `cutstream`


def _fault_worker(fault: str, **options: Any) -> None:
    from streams.testing import KillAt

    run_worker(options, [KillAt.parse(fault)])


main.add_command(
    click.Command(
        "worker",
        params=[*worker_command.params, click.Option(["--fault"], required=True, help="<point>:<n>")],
        callback=_fault_worker,
        help="`cutstream worker` that SIGKILLs itself the n-th time it passes a fault point.",
    )
)

if __name__ == "__main__":
    main()
