"""`hydra/sweeper=listed`: a multirun of the jobs a file lists, each with overrides of its own, in one launcher call.

`listener-sub COMMAND -m hydra/sweeper=listed hydra.sweeper.jobs=FILE [overrides every job shares]`: FILE is JSON, one
list of overrides per job (`[["experiment=colorblind", "trainer.seed=0", "hydra.sweep.subdir=colorblind/seed_0"],
...]`). Each job is composed from the shared overrides and then its own, as if they were typed after the command, so
it is the run those overrides make alone. Every job goes to the configured launcher (`hydra/launcher=...`) at once: a
launcher that runs jobs side by side (joblib, submitit) spreads all of them. `listener-sub results` runs its sweep this
way, since its rows differ in which settings they override, which a cartesian sweep (Hydra's basic sweeper) cannot
express.

Every job runs even when others fail; then the sweep fails with one line naming each failed job's run directory.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules, where
# dataclasses look string annotations up.
import json
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig, OmegaConf

from listener_sub.cli import one_line
from listener_sub.errors import UserError


@dataclass
class ListedSweeperConf:
    _target_: str = "hydra_plugins.listener_sub_sweeper.listed_sweeper.ListedSweeper"
    jobs: str = MISSING  # a JSON file: a list with one list of overrides per job


def read_jobs(path: Path) -> list[list[str]]:
    """The jobs a file lists: each a list of override strings; UserError naming what is wrong."""
    try:
        jobs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"hydra.sweeper.jobs={path} is unreadable ({error}); pass a JSON list of jobs") from None
    if (
        not isinstance(jobs, list)
        or not jobs
        or not all(isinstance(job, list) and all(isinstance(o, str) for o in job) for job in jobs)
    ):
        raise UserError(f"hydra.sweeper.jobs={path}: list at least one job, each a list of override strings")
    return jobs


class ListedSweeper(Sweeper):
    """Launches the listed jobs in one launcher call; fails after all have ended if any failed."""

    def __init__(self, jobs: str) -> None:
        self.jobs = Path(jobs)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.config is not None
        swept = [o.input_line for o in OverridesParser.create().parse_overrides(arguments) if o.is_sweep_override()]
        if swept:
            raise UserError(
                f"{' '.join(swept)}: hydra/sweeper=listed runs the jobs listed in {self.jobs}; "
                "give the overrides every job shares one value each"
            )
        batch = [[*arguments, *job] for job in read_jobs(self.jobs)]
        self.validate_batch_is_legal(batch)  # every job composes, before any runs
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = list(self.launcher.launch(batch, initial_job_idx=0))
        failed = [job for job in returns if job.status != JobStatus.COMPLETED]
        if failed:
            where = [f"{job.hydra_cfg.hydra.runtime.output_dir} ({one_line(job._return_value)})" for job in failed]
            raise UserError(f"{len(failed)} of {len(returns)} runs failed: {'; '.join(where)}")
        return returns


def register_sweeper() -> None:
    """Register the sweeper's class with Hydra. Hydra's scan of the hydra_plugins namespace finds this module in an
    installed wheel but not in an editable install, so listener_sub.configs calls this too (twice is harmless)."""
    Plugins.instance().register(ListedSweeper)


ConfigStore.instance().store(group="hydra/sweeper", name="listed", node=ListedSweeperConf, provider="listener_sub")
