"""The before/after metrics table of train, eval and inspect: rows for the terminal (rich) and for the HTML report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

SAMPLE = "sample/"  # prefix of the metrics of temperature-1 samples


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
