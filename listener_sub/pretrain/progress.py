"""Progress of a pretraining loop: a tqdm bar on a terminal, whole lines in a log.

A log file (stderr not a terminal) would otherwise get a bar's carriage-return redraws, ten a second, and the bars of
models trained side by side in processes of their own would interleave there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

PLAIN_LINES = 10  # lines a loop writes into a log: one per tenth of its steps
BAR_EVERY = 20  # steps between the bar's updates of its values (reading a loss may wait on a GPU)


class StepProgress:
    """Iterate over `steps` step numbers; after each, `show(name=value)` the values to display (a tensor is read only on
    the steps that display it).

        progress = StepProgress(1000, "training LM", enabled)
        for step in progress:
            loss = ...
            progress.show(loss=loss)
    """

    def __init__(self, steps: int, label: str, enabled: bool = True, position: int | None = None) -> None:
        self.steps, self.label = steps, label
        terminal = sys.stderr.isatty()
        self.plain = enabled and not terminal
        self.every = max(1, steps // PLAIN_LINES)
        shown = enabled and terminal
        # a bar among others (`position`) is cleared when done, as theirs go on
        self.bar = tqdm(total=steps, desc=label, disable=not shown, leave=position is None, position=position)
        self.step = -1

    def __iter__(self) -> Iterator[int]:
        try:
            for step in range(self.steps):
                self.step = step
                yield step
                self.bar.update(1)
        finally:
            self.bar.close()

    def show(self, **values: float | torch.Tensor) -> None:
        """Display the current step's values where this step displays any: on the bar every BAR_EVERY steps and at the
        last, in a log at each tenth of the steps."""
        last = self.step == self.steps - 1
        on_bar = not self.bar.disable and (self.step % BAR_EVERY == 0 or last)
        on_line = self.plain and ((self.step + 1) % self.every == 0 or last)
        if not (on_bar or on_line):
            return
        shown = {name: float(value) for name, value in values.items()}
        if on_bar:
            self.bar.set_postfix({name: f"{value:.3f}" for name, value in shown.items()}, refresh=False)
        if on_line:
            detail = ", ".join(f"{name} {value:.3f}" for name, value in shown.items())
            line = f"{self.label}: step {self.step + 1}/{self.steps}, {detail}\n"
            sys.stderr.write(line)  # one write: the lines of processes side by side stay whole
            sys.stderr.flush()
