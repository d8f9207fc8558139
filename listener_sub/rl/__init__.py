"""RL on the listener-subtraction game: the settings, the objective (baselines, multipliers, REINFORCE) and the loop.

from listener_sub.rl import RLConfig, Trainer
result = Trainer(RLConfig(steps=250), speaker, game, "runs/colorblind").fit()
"""

from listener_sub.rl.config import BASELINES, ConstraintConfig, RLConfig
from listener_sub.rl.objective import Baseline, Multipliers, Objective, check_constraint, reinforce
from listener_sub.rl.trainer import Phases, TargetInputs, Trainer, frozen_inputs

__all__ = [
    "BASELINES",
    "Baseline",
    "ConstraintConfig",
    "Multipliers",
    "Objective",
    "Phases",
    "RLConfig",
    "TargetInputs",
    "Trainer",
    "check_constraint",
    "frozen_inputs",
    "reinforce",
]
