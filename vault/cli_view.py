"""How the ``objvault`` commands print: for people, aligned tables with binary
sizes (``1.5 MiB``) and ages (``3 days ago``); with ``--json``, the API's
document exactly as it came, for scripts; and progress bars with rate and ETA
on a terminal only, so a pipe or a log file gets the result and nothing else.

Tables are :mod:`tabulate`'s, bars :mod:`tqdm`'s, sizes and ages :mod:`humanize`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent import futures
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence, TypeVar

import humanize
from tabulate import tabulate
from tqdm import tqdm


def out(doc: Any) -> None:
    """A JSON document on stdout, indented."""
    print(json.dumps(doc, indent=2))


def emit(args: argparse.Namespace, doc: Any, render: Callable[[Any], None]) -> None:
    """``doc`` as it came with ``--json``, else as ``render`` prints it for people."""
    if args.json:
        out(doc)
    else:
        render(doc)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """Rows under a header line, columns aligned; cells are printed as given."""
    print(tabulate(rows, headers=headers, disable_numparse=True))


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """One record as ``name  value`` lines, values aligned."""
    print(tabulate(pairs, tablefmt="plain", disable_numparse=True))


def size(n: int | float | None) -> str:
    """Bytes for people: ``812 Bytes``, ``45.3 KiB``, ``1.2 GiB``; ``-`` for none."""
    return "-" if n is None else humanize.naturalsize(n, binary=True)


def when(stamp: str | float | None) -> str:
    """An ISO 8601 UTC time or a Unix time as its age (``3 days ago``); ``never`` for none."""
    if stamp is None:
        return "never"
    if isinstance(stamp, str):
        moment = datetime.fromisoformat(stamp)
    else:
        moment = datetime.fromtimestamp(stamp, timezone.utc)
    return humanize.naturaltime(datetime.now(timezone.utc) - moment)


def span(seconds: float | None) -> str:
    """A duration for people (``4 minutes``, ``1.2 s`` under a minute); ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return humanize.naturaldelta(timedelta(seconds=seconds))


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def progress(desc: str, total: int | None, unit: str) -> tqdm:
    """A bar on stderr with rate and ETA (``unit="B"``: binary sizes), shown only when
    stderr is a terminal; elsewhere every update is a no-op."""
    return tqdm(desc=desc, total=total, unit=_unit(unit), unit_scale=True, unit_divisor=1024 if unit == "B" else 1000,
                file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True)


def _unit(unit: str) -> str:
    """tqdm's unit: ``B`` counts binary multiples (``4.5MiB/s``); a word is set apart (``3.2 objects/s``)."""
    return "iB" if unit == "B" else f" {unit}"


def stage(bar: tqdm, label: str, total: int | None, unit: str) -> None:
    """Start ``bar`` over for a new stage of the work (nothing if it is in that stage)."""
    if bar.disable or bar.desc == label:
        return
    # Assigned, not set_description(): that appends ": ", which tqdm adds again to a bar with no total.
    bar.desc = label
    bar.unit = _unit(unit)
    bar.total = total or None  # reset(None) would keep the last stage's total
    bar.reset(bar.total)


def advance(bar: tqdm, done: int, total: int | None, **postfix: Any) -> None:
    """Move ``bar`` to ``done`` of ``total`` (both from the latest report) and show it now."""
    if bar.disable:
        return
    if total and bar.total != total:
        bar.total = total
    bar.set_postfix(postfix, refresh=False)
    bar.update(done - bar.n)
    bar.refresh()


Result = TypeVar("Result")


def follow(bar: tqdm, call: Callable[[], Result], tick: Callable[[], None], interval: float) -> Result:
    """``call()``'s result; while it runs (in a thread), ``tick()`` every ``interval``
    seconds to update ``bar``. A bar that is not shown is not fed: no ticks."""
    if bar.disable:
        return call()
    with futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(call)
        while not futures.wait([running], timeout=interval).done:
            tick()
        return running.result()


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's JSON document instead of a table")
