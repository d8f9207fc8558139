"""The RL trainer's settings (the `trainer` config node): every hyperparameter of a REINFORCE run, checked on
creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from listener_sub.models.speaker import check_sampling
from listener_sub.optim import Schedule

BASELINES = ("rloo", "mean", "ema", "none")


@dataclass
class ConstraintConfig:
    """Constrained subtraction (beyond the paper, after Moskovitz et al., ICLR 2024, constrained RLHF): maximise the
    intended listeners' reward subject to upper bounds; each bound set turns its coefficient into a Lagrange multiplier
    learnt by dual ascent on the step's sampled captions, starting from the fixed value (reward.lam, trainer.beta)."""

    # bound on the subtracted listeners' mean accuracy (e.g. chance + 0.05); learns reward.lam
    subtracted_acc: Optional[float] = None
    kl: Optional[float] = None  # bound on KL(pi || ref) per caption, in nats (the k1 estimate); learns trainer.beta
    lam_lr: float = 0.5  # dual step of lam: lam += lam_lr * (subtracted accuracy - bound), kept >= 0
    beta_lr: float = 0.05  # dual step of beta: beta += beta_lr * (kl - bound), kept >= 0

    def __post_init__(self) -> None:
        if self.subtracted_acc is not None and not 0.0 <= self.subtracted_acc <= 1.0:
            raise ValueError(f"constraint.subtracted_acc={self.subtracted_acc} (an accuracy bound, in [0, 1])")
        if self.kl is not None and self.kl < 0:
            raise ValueError(f"constraint.kl={self.kl} (a KL budget in nats, >= 0)")
        if self.lam_lr <= 0 or self.beta_lr <= 0:
            raise ValueError(
                f"constraint.lam_lr={self.lam_lr}, constraint.beta_lr={self.beta_lr} (dual steps must be > 0)"
            )


@dataclass
class RLConfig:
    """Every hyperparameter of RL training (the `trainer` config node; the evaluation boards are the run's
    `evaluation` node)."""

    steps: int = 400  # optimizer steps in all (a resumed run continues up to this many)
    boards: int = 32  # B: train boards per step
    k: int = 4  # captions sampled per board (rloo needs k >= 2)
    temperature: float = 1.0  # sampling temperature (1 = on-policy: log-probs are taken at temperature 1)
    top_k: int = 0  # 0: off (sample from the true policy)
    top_p: float = 1.0  # 1: off (sample from the true policy)
    max_new_tokens: int = 16  # longest caption in tokens, EOS included
    baseline: str = "rloo"  # rloo (mean of the board's other k-1 samples) | mean (batch mean) | ema | none
    ema_decay: float = 0.9  # ema baseline: weight of its previous value
    # KL coefficient: reward -= beta * sum_t (log pi - log pi_ref) over the caption's tokens. The reward's own floors
    # (reward.chance_floor, reward.misled_cost) keep the captions truthful, so the KL only keeps them English: with the
    # paper's reward, beta 0.05 taught the speaker wrong shapes (docs/results.md's beta and reward rows measure this)
    beta: float = 0.05
    entropy: float = 0.0  # entropy bonus: reward += entropy * sum_t -log pi (the sampled estimate)
    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    # linear warmup over 10 steps, then constant (floor 1: no decay)
    schedule: Schedule = field(default_factory=lambda: Schedule(warmup=10, floor=1.0))
    max_grad_norm: float = 1.0  # gradient clipping (global L2 norm); 0: off
    split: str = "train"  # split of the game's data the training boards come from
    log_every: int = 1  # steps between lines of metrics.jsonl / TensorBoard points
    eval_every: int = 100  # steps between evaluations (also before and after training); 0: before and after only
    save_every: int = 50  # steps between checkpoints (also at the end); 0: at the end only
    keep_last: int = 0  # checkpoints kept on disk, the newest (older ones deleted once a new one is written); 0: all
    # a step with a non-finite loss or gradient is skipped (counted: skipped_steps); this many in a row stop the run
    max_bad_steps: int = 10
    seed: int = 0  # draws the training boards and caption samples
    progress: bool = True  # show a progress bar
    # torch.compile the adapter as the step runs it (meant for GPUs: on a 2-core CPU it ran no faster)
    compile: bool = False
    constraint: ConstraintConfig = field(
        default_factory=ConstraintConfig
    )  # bounds whose multipliers replace lam / beta

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        problems = []
        if self.baseline not in BASELINES:
            problems.append(f"baseline={self.baseline} (choose one of: {', '.join(BASELINES)})")
        if self.baseline == "rloo" and self.k < 2:
            problems.append(f"k={self.k} with baseline=rloo (needs k >= 2)")
        for name in ("steps", "boards", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (must be >= 1)")
        for name in ("eval_every", "save_every", "keep_last", "beta", "entropy", "max_grad_norm", "lr"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} (must be >= 0)")
        try:
            check_sampling(self.k, self.temperature, self.top_k, self.top_p, self.max_new_tokens, greedy=False)
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("bad trainer settings: " + "; ".join(problems))
