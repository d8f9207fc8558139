"""What the commands print: the before/after metrics table of train, eval and inspect (rows for the terminal and for
the HTML report), the console they print on, and `show`, which prints and writes the same text into the run's log."""

from __future__ import annotations

import io
import logging
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.table import Table

SAMPLE = "sample/"  # prefix of the metrics of temperature-1 samples
PLAIN_WIDTH = 160  # columns of a table printed into a pipe or a file (rich would assume 80 and wrap every name)
LOG = logging.getLogger("listener_sub.output")  # the name a command's output carries in its run's log


def console(file: IO[str] | None = None) -> Console:
    """A rich console on `file` (stdout by default): a terminal's own width, or at least PLAIN_WIDTH columns when the
    output is a pipe or a file, so a redirected table keeps each metric name on one line."""
    out = Console(file=file)
    if not out.is_terminal:
        out.width = max(out.width, PLAIN_WIDTH)
    return out


def plain_text(renderable: RenderableType) -> str:
    """A table (or any rich renderable) as the plain text a pipe would receive: PLAIN_WIDTH columns, no colours."""
    buffer = io.StringIO()
    Console(file=buffer, width=PLAIN_WIDTH, color_system=None, force_terminal=False).print(renderable)
    return buffer.getvalue().rstrip("\n")


def show(*items: RenderableType) -> None:
    """Print each item (a rich table, or a string as plain text, never markup) on stdout, and write the same plain text
    into the run's log files (Hydra's `<command>.log` in the run directory).

    The text is handed to the root logger's file handlers alone, whatever the logging level: it is the command's output,
    not a diagnostic, and the root's console handler would print it on stdout a second time.
    """
    out = console()
    for item in items:
        if isinstance(item, str):
            print(f"{item}\n", end="", flush=True)  # one write: lines of jobs run side by side stay whole
            text = item
        else:
            out.print(item)
            text = plain_text(item)
        record = LOG.makeRecord(LOG.name, logging.INFO, __file__, 0, f"\n{text}" if "\n" in text else text, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


def metric_rows(columns: dict[str, dict[str, float]]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """Column names (each entry of `columns`, then its `sample/` twin) and one row of values per greedy metric."""
    names = [*columns, *(f"{SAMPLE}{name}" for name in columns)]
    first = next(iter(columns.values()))
    rows = [
        (key, [m[key] for m in columns.values()] + [m.get(SAMPLE + key, float("nan")) for m in columns.values()])
        for key in first
        if not key.startswith(SAMPLE)
    ]
    return names, rows


def metrics_table(title: str, columns: dict[str, dict[str, float]], oracle: dict[str, Any]) -> Table:
    """Metrics of greedy captions and of samples side by side, one column per entry of `columns`, below them the oracle
    gaps and the transfer ratio where `oracle` (a summary) has them."""
    table = Table(title=title)
    table.add_column("metric")
    names, rows = metric_rows(columns)
    for name in names:
        table.add_column(name, justify="right")
    for key, values in rows:
        table.add_row(key, *(f"{v:.3f}" for v in values))
    if "fixed_oracle_gap" in oracle:  # oracle speakers exist for data with scenes only
        subset = "+".join(oracle["fixed_oracle_subset"])
        table.add_row(f"fixed_oracle_gap ({subset})", f"{oracle['fixed_oracle_gap']:.3f}")
        table.add_row("oracle_gap", f"{oracle['oracle_gap']:.3f}")
    if "transfer" in oracle:
        transfer = oracle["transfer"]
        ratio = "n/a" if transfer["ratio"] is None else f"{transfer['ratio']:.3f}"  # no in-domain gap to compare with
        table.add_row(f"transfer ratio (gap / in-domain {transfer['in_domain_gap']:.3f})", ratio)
    return table
