"""REINFORCE with listener subtraction: the speaker's adapter learns from the game's reward.

Read top to bottom: the config, the baselines, one training step, evaluation, checkpoints, the loop.
Each step draws B train boards, samples k captions per target from the policy (temperature, no top-k /
top-p), lets the game's listeners judge them, folds the per-token KL to the reference policy (the frozen
captioning adapter, k1 estimator) and an optional entropy bonus into each caption's reward, subtracts a
baseline and takes one AdamW step on the adapter's parameters; the vision tower and the LM stay frozen. Under
`constraint` bounds, the reward's lam and the KL coefficient are Lagrange multipliers, one dual step after each update.
All randomness comes from the trainer's own generators, which checkpoints save, so a resumed run
continues exactly where the saved one stopped.

Under torchrun every rank draws the same global batch of boards and random numbers and plays its own share of them;
the adapter is wrapped in DistributedDataParallel (its gradients averaged over ranks), the step's metrics are
computed over every rank's captions, and rank 0 logs and checkpoints. P ranks of B boards each therefore train
like one process of P*B boards.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from listener_sub.data.imageset import Pixels
from listener_sub.distributed import Ranks
from listener_sub.draws import uniforms
from listener_sub.errors import TrainingDiverged, UserError
from listener_sub.evaluation import EvalConfig, evaluate_speaker, held_out_boards, warm_pool
from listener_sub.files import atomic_path
from listener_sub.game import Boards, Game, Outcome
from listener_sub.metrics import caption_metrics
from listener_sub.models.speaker import Speaker, VisionFeatures, check_sampling, read_adapter, write_adapter
from listener_sub.optim import adamw, warmup_cosine

BASELINES = ("rloo", "mean", "ema", "none")
logger = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"  # run-directory folder of step_NNNNNN/ checkpoints
ADAPTER = "adapter.safetensors"  # a checkpoint's adapter weights (its kind and config in adapter.json beside them)
STATE = "trainer.json"  # a checkpoint's optimizer, scheduler, baseline, RNG states, step and before-training metrics
STATE_TENSORS = "trainer.safetensors"  # the tensors of that state (STATE names each in its place)
LEGACY_STATE = "trainer.pt"  # the state of checkpoints written before 2026-12-03: a pickle, read weights-only
EVAL_BOARDS = "eval_boards.npz"  # the final evaluation's value of each held-out board (intervals over boards)


@dataclass
class ConstraintConfig:
    """Constrained subtraction (beyond the paper, after Moskovitz et al., ICLR 2024, constrained RLHF): maximise the
    intended listeners' reward subject to upper bounds; each bound set turns its coefficient into a Lagrange multiplier
    learnt by dual ascent on the step's sampled captions, starting from the fixed value (reward.lam, trainer.beta)."""

    subtracted_acc: Optional[float] = (
        None  # bound on the subtracted listeners' mean accuracy (e.g. chance + 0.05); learns reward.lam
    )
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
    """Every hyperparameter of RL training (the `trainer` config node; the evaluation boards are the run's `eval` node)."""

    steps: int = 400  # optimizer steps in all (a resumed run continues up to this many)
    boards: int = 32  # B: train boards per step
    k: int = 4  # captions sampled per board (rloo needs k >= 2)
    temperature: float = 1.0  # sampling temperature (1 = on-policy: log-probs are taken at temperature 1)
    top_k: int = 0  # 0: off (sample from the true policy)
    top_p: float = 1.0  # 1: off (sample from the true policy)
    max_new_tokens: int = 16  # longest caption in tokens, EOS included
    baseline: str = "rloo"  # rloo (mean of the board's other k-1 samples) | mean (batch mean) | ema | none
    ema_decay: float = 0.9  # ema baseline: weight of its previous value
    # KL coefficient: reward -= beta * sum_t (log pi - log pi_ref) over the caption's tokens. With less, the speaker can learn
    # to name a wrong shape, which misleads the colour-blind listener (the beta rows of docs/results.md measure the trade).
    beta: float = 0.15
    entropy: float = 0.0  # entropy bonus: reward += entropy * sum_t -log pi (the sampled estimate)
    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    warmup: int = 10  # steps of linear learning-rate warmup
    lr_floor: float = 1.0  # learning rate at `steps` as a fraction of lr (cosine decay after warmup); 1: constant
    max_grad_norm: float = 1.0  # gradient clipping (global L2 norm); 0: off
    split: str = "train"  # split of the game's data the training boards come from
    log_every: int = 1  # steps between lines of metrics.jsonl / TensorBoard points
    eval_every: int = 100  # steps between evaluations (also before and after training); 0: before and after only
    save_every: int = 50  # steps between checkpoints (also at the end); 0: at the end only
    keep_last: int = 0  # checkpoints kept on disk, the newest (older ones deleted once a new one is written); 0: all
    max_bad_steps: int = 10  # a step with a non-finite loss or gradient is skipped (counted: skipped_steps); this many in a row stop the run
    seed: int = 0  # draws the training boards and caption samples
    progress: bool = True  # show a progress bar
    compile: bool = (
        False  # torch.compile the adapter as the step runs it (meant for GPUs: on a 2-core CPU it ran no faster)
    )
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
        for name in ("eval_every", "save_every", "keep_last", "warmup", "beta", "entropy", "max_grad_norm", "lr"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} (must be >= 0)")
        try:
            check_sampling(self.k, self.temperature, self.top_k, self.top_p, self.max_new_tokens, greedy=False)
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("bad trainer settings: " + "; ".join(problems))


# ---------------------------------------------------------------- baselines


class Baseline:
    """What each sampled caption's reward is compared with: rloo, the batch mean, a running mean (ema), or 0."""

    def __init__(self, kind: str, k: int, decay: float, ranks: Ranks = Ranks()) -> None:
        self.kind, self.k, self.decay, self.ranks = kind, k, decay, ranks
        self.ema: float | None = None  # the ema baseline's running value (checkpointed)

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """(B*k,) rewards, rows b*k+j -> (B*k,) baselines."""
        if self.kind == "rloo":
            grouped = rewards.view(-1, self.k)  # (B, k)
            return ((grouped.sum(1, keepdim=True) - grouped) / (self.k - 1)).view(-1)
        if self.kind == "none":
            return torch.zeros_like(rewards)
        mean = float(self.ranks.mean(rewards.mean()))  # the mean over every rank's captions
        if self.kind == "mean":
            return torch.full_like(rewards, mean)
        value = mean if self.ema is None else self.ema  # ema: the running mean of earlier batches
        self.ema = self.decay * value + (1 - self.decay) * mean
        return torch.full_like(rewards, value)


# ---------------------------------------------------------------- constrained subtraction


class Multipliers:
    """The reward's lam and the KL coefficient beta: fixed, or -- for each bound `constraint` sets -- a Lagrange
    multiplier moved by projected dual ascent after every step: up while the step's sampled captions break the bound,
    down (to 0 at least) while they keep it."""

    def __init__(self, constraint: ConstraintConfig, lam: float, beta: float) -> None:
        self.constraint, self.lam, self.beta = constraint, float(lam), float(beta)

    def update(self, subtracted_acc: float, kl: float) -> None:
        """One dual step from the step's measured subtracted accuracy and KL (means over every rank's captions)."""
        c = self.constraint
        if c.subtracted_acc is not None:
            self.lam = max(0.0, self.lam + c.lam_lr * (subtracted_acc - c.subtracted_acc))
        if c.kl is not None:
            self.beta = max(0.0, self.beta + c.beta_lr * (kl - c.kl))

    def state_dict(self) -> dict[str, float]:
        return {"lam": self.lam, "beta": self.beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lam, self.beta = float(state["lam"]), float(state["beta"])


def check_constraint(constraint: ConstraintConfig, reward: object) -> None:
    """Raise ValueError when a subtracted-accuracy bound cannot apply to the reward: it needs subtracted listeners, a
    `lam` to learn (a dataclass reward such as listener_sub.rewards.Reward) and a score that lam weighs (not dixit)."""
    if constraint.subtracted_acc is None:
        return
    if not getattr(reward, "subtracted", None):
        raise ValueError(
            "trainer.constraint.subtracted_acc bounds the subtracted listeners' accuracy, but the reward subtracts none"
        )
    if not (is_dataclass(reward) and hasattr(reward, "lam")):
        raise ValueError(
            f"trainer.constraint.subtracted_acc learns the reward's lam, which {type(reward).__name__} does not have as a dataclass field"
        )
    if getattr(reward, "score", None) == "dixit":
        raise ValueError(
            "trainer.constraint.subtracted_acc with reward.score=dixit: the dixit rule has no lam to learn; choose acc, prob or logprob"
        )


# ---------------------------------------------------------------- the objective


@dataclass
class Objective:
    """The REINFORCE objective of B*k sampled captions and its terms (each (B*k,), but the scalar loss)."""

    loss: torch.Tensor  # -mean(advantage * log pi(caption)), the only term with grad
    reward: torch.Tensor  # the game's reward
    kl: torch.Tensor  # k1 estimate of KL(pi || ref), summed over the caption's tokens
    entropy: torch.Tensor  # sampled estimate of the caption entropy (-log pi)
    total: torch.Tensor  # reward - beta * kl + entropy bonus
    advantage: torch.Tensor  # total - baseline


def reinforce(
    game_reward: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    baseline: Baseline,
    beta: float,
    entropy_bonus: float = 0.0,
) -> Objective:
    """KL-regularised REINFORCE: the per-token KL to the reference (k1, weight beta) and the entropy bonus folded into
    each caption's reward, a baseline subtracted; logp (B*k, L) with grad, ref_logp (B*k, L) without, both 0 after EOS."""
    seq_logp = logp.sum(1)  # (B*k,) log pi(caption), EOS included
    kl = (logp.detach() - ref_logp).sum(1)  # (B*k,) k1 estimate of KL(pi || ref), summed over tokens
    entropy = -seq_logp.detach()  # (B*k,) sampled estimate of the caption entropy
    reward = game_reward.to(kl.device).float()  # (B*k,) the game's reward
    total = reward - beta * kl + entropy_bonus * entropy  # (B*k,)
    advantage = total - baseline(total)  # (B*k,)
    return Objective(-(advantage * seq_logp).mean(), reward, kl, entropy, total, advantage)


# ---------------------------------------------------------------- phases of a step


class Phases:
    """Wall seconds spent in each named phase of a step, summed over steps; a no-op unless `timed`.

    On CUDA the device is synchronised at each phase boundary, so the times are the phases' own.
    """

    def __init__(self, timed: bool = True) -> None:
        self.timed = timed
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.timed:
            yield
            return
        _synchronize()
        start = time.perf_counter()
        yield
        _synchronize()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------- the frozen side of the speaker, per pool image


@torch.no_grad()
def frozen_inputs(speaker: Speaker, reference: torch.nn.Module, images: Pixels) -> tuple[VisionFeatures, torch.Tensor]:
    """What the speaker's frozen parts make of images: vision features and the reference policy's soft prefix (B, M, d_lm)."""
    features = speaker.encode(images)  # (B, ...) what the speaker sees
    return features, speaker.adapt(features, reference)


class TargetInputs:
    """What the speaker's frozen parts make of each image of the training pool, computed once, `chunk` images a pass in
    pool order (a resumed run reads the same numbers): the vision features and the reference policy's soft prefix.

    Built whenever the table `fits` in memory: the trainer already encodes the whole pool once for each listener.
    """

    def __init__(self, speaker: Speaker, reference: torch.nn.Module, images: Pixels, chunk: int = 256) -> None:
        parts = [
            frozen_inputs(speaker, reference, images[start : start + chunk]) for start in range(0, len(images), chunk)
        ]
        self.features = VisionFeatures.cat([features for features, _ in parts])  # (P, ...)
        self.reference = torch.cat([prefix for _, prefix in parts])  # (P, M, d_lm)

    @staticmethod
    def fits(speaker: Speaker, images: Pixels, budget: int = 1 << 30) -> bool:
        """Whether the table of `images` takes at most `budget` bytes."""
        one = speaker.encode(images[:1])  # the sizes of one image's features
        per_image = (
            one.pooled.numel() + one.tokens.numel() + speaker.n_prefix * speaker.lm.get_input_embeddings().embedding_dim
        )
        return len(images) * per_image * 4 <= budget

    def __getitem__(self, items: np.ndarray) -> tuple[VisionFeatures, torch.Tensor]:
        """The (B,) pool images' vision features and reference prefixes (B, M, d_lm)."""
        return self.features[items], self.reference[torch.as_tensor(items, device=self.reference.device)]


# ---------------------------------------------------------------- the trainer


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    found = (Path(run_dir) / CHECKPOINTS).glob("step_*")
    return sorted(path for path in found if (path / STATE).is_file() or (path / LEGACY_STATE).is_file())


def write_state(state: Any, folder: Path) -> None:
    """A nested state as safetensors (every tensor) + JSON (the rest, each tensor's name in its place; tuples and dicts
    with keys of any type tagged, so reading gives back the same types)."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[name := f"t{len(tensors)}"] = x.detach().cpu().contiguous()
            return {"__tensor__": name}
        if isinstance(x, dict):
            return {"__dict__": [[encode(k), encode(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [encode(v) for v in x]}
        if isinstance(x, list):
            return [encode(v) for v in x]
        if isinstance(x, (bool, int, float, str)) or x is None:
            return x
        raise TypeError(f"cannot write {type(x).__name__} into a checkpoint's state")

    skeleton = encode(state)
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE).write_text(json.dumps(skeleton))


def read_state(folder: Path) -> Any:
    """The state `write_state` wrote into `folder` (tensors on the CPU); a legacy checkpoint's pickle weights-only."""
    if not (folder / STATE).is_file():
        return torch.load(folder / LEGACY_STATE, map_location="cpu", weights_only=True)
    tensors = load_file(str(folder / STATE_TENSORS))

    def decode(x: Any) -> Any:
        if isinstance(x, list):
            return [decode(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            return tensors[x["__tensor__"]]
        if "__tuple__" in x:
            return tuple(decode(v) for v in x["__tuple__"])
        return {decode(k): decode(v) for k, v in x["__dict__"]}

    return decode(json.loads((folder / STATE).read_text()))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's checkpoint of the highest step (None when it has none)."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def start_from(run_dir: str | Path, resume: bool) -> Path | None:
    """The checkpoint a run continues from (None: a fresh start); UserError when that cannot be what the user meant."""
    checkpoint = latest_checkpoint(run_dir)
    if resume and checkpoint is None:
        raise UserError(
            f"resume=true but {Path(run_dir) / CHECKPOINTS} holds no checkpoint; "
            "pass the run's directory as hydra.run.dir=DIR, or drop resume=true to start afresh"
        )
    if not resume and checkpoint is not None:
        raise UserError(
            f"{run_dir} already holds checkpoints; continue that run with resume=true or choose another hydra.run.dir"
        )
    return checkpoint if resume else None


class Trainer:
    """REINFORCE with a KL penalty on the speaker's adapter, played through the batched game core (on each of `ranks`)."""

    def __init__(
        self,
        cfg: RLConfig,
        speaker: Speaker,
        game: Game,
        run_dir: str | Path,
        eval_cfg: EvalConfig = EvalConfig(),
        ranks: Ranks = Ranks(),
    ) -> None:
        self.cfg, self.speaker, self.game, self.run_dir, self.eval_cfg = cfg, speaker, game, Path(run_dir), eval_cfg
        self.ranks = ranks
        self.reference = copy.deepcopy(speaker.adapter).requires_grad_(False).eval()  # the captioning policy, frozen
        self.speaker.eval()  # no dropout: the sampled and the scored policy are the same
        self.policy = speaker.adapter  # what the step's prefix goes through: under torchrun, DDP around the adapter
        if ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.policy = DistributedDataParallel(
                speaker.adapter
            )  # gradients averaged over ranks; rank 0's weights to start
        if cfg.compile:
            self.policy = torch.compile(self.policy)  # compiled on the first step; the weights stay the adapter's own
        self.params = list(speaker.adapter.parameters())
        self.optimizer = adamw(self.params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        schedule = lambda step: warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr_floor)  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.baseline = Baseline(cfg.baseline, cfg.k, cfg.ema_decay, ranks)
        check_constraint(cfg.constraint, game.reward)
        self.reward = (
            game.reward
        )  # the reward as configured; under a subtracted-accuracy bound the game plays it with the learnt lam
        self.multipliers = Multipliers(cfg.constraint, getattr(game.reward, "lam", 0.0), cfg.beta)
        self.rng = np.random.default_rng(cfg.seed)  # training boards (every rank draws the global batch)
        self.generator = torch.Generator(device=speaker.device).manual_seed(cfg.seed)  # caption samples, listener picks
        self.step = 0
        self.skipped = 0  # steps skipped for a non-finite loss or gradient, in all
        self.bad_in_a_row = 0  # of them, the latest consecutive ones
        self.phases = Phases(timed=False)  # wall time per part of a step, when timed (`listener-sub bench`)
        self.before: dict[str, float] = {}  # metrics of the captioning speaker, before any step
        self.wall_s = {"rl": 0.0, "eval": 0.0}  # seconds spent in this process
        warm_pool(game, cfg.split)
        self.eval_boards = held_out_boards(game, eval_cfg)
        images = game.pool(cfg.split).images
        self.targets = TargetInputs(speaker, self.reference, images) if TargetInputs.fits(speaker, images) else None

    # ------------------------------------------------------------ one step

    def train_step(self) -> dict[str, float]:
        """One REINFORCE update on B fresh boards; returns the step's training metrics (`self.phases` times each part)."""
        cfg, speaker, phase = self.cfg, self.speaker, self.phases
        with phase("boards"):
            boards, draws = self.deal()
        with phase("vision"):
            features, ref_prefix = self.target_inputs(
                boards
            )  # the B targets' frozen vision features and reference prefix
        with phase("sampling"):
            prefix = speaker.adapt(features, self.policy)  # (B, M, d_lm) the policy's soft prefix, with grad
            gen = speaker.sample(
                prefix,
                cfg.k,
                cfg.temperature,
                cfg.top_k,
                cfg.top_p,
                cfg.max_new_tokens,
                draws=draws[:, : cfg.max_new_tokens],
            )  # B*k captions, row b*k+j
        with phase("listeners"):
            outcome = self.game.play(gen.texts, boards.repeat(cfg.k), draws=draws[:, cfg.max_new_tokens :])
        with phase("teacher-forced pass"):
            logp, mask = speaker.log_probs(prefix.repeat_interleave(cfg.k, 0), gen.tokens, gen.lengths)  # (B*k, L)
        with phase("reference pass"), torch.no_grad():
            ref_logp, _ = speaker.log_probs(ref_prefix.repeat_interleave(cfg.k, 0), gen.tokens, gen.lengths)
        objective = self.objective(outcome.reward, logp, ref_logp)

        grad_norm, lr = self.update(objective.loss)
        with phase("bookkeeping"):
            metrics = self.step_metrics(objective, outcome, mask, grad_norm, lr, gen.texts, boards.repeat(cfg.k))
        self.dual_step(metrics)
        return metrics

    def objective(self, game_reward: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor) -> Objective:
        """The KL-regularised REINFORCE loss of the step's captions, with the current KL coefficient."""
        return reinforce(game_reward, logp, ref_logp, self.baseline, self.multipliers.beta, self.cfg.entropy)

    def dual_step(self, metrics: dict[str, float]) -> None:
        """Move the multipliers of the bounds set (`Multipliers`) from the step's metrics, and let the game's reward use
        the new lam from the next step on; the step's metrics gain the lam and beta it was trained with."""
        subtracted = [metrics[f"acc/{name}"] for name in self.reward.subtracted]
        metrics |= {"lam": self.multipliers.lam, "beta": self.multipliers.beta}
        if self.bad_in_a_row:
            return  # a skipped step (non-finite loss or gradient) moves no multiplier
        self.multipliers.update(float(np.mean(subtracted)) if subtracted else 0.0, metrics["kl"])
        self.game.reward = self.played_reward()

    def played_reward(self) -> Any:
        """The reward the game plays: as configured, with the learnt lam under a subtracted-accuracy bound."""
        if self.cfg.constraint.subtracted_acc is None:
            return self.reward
        return replace(self.reward, lam=self.multipliers.lam)

    def deal(self) -> tuple[Boards, torch.Tensor]:
        """This rank's share of the step's global batch: its B boards, and its (B*k, tokens + listeners) rows of the step's
        random numbers (each caption's token draws, then each listener's pick). Every rank draws the whole batch."""
        cfg, ranks = self.cfg, self.ranks
        n = cfg.boards * cfg.k  # captions this rank samples
        boards = self.game.sample(ranks.world * cfg.boards, self.rng, cfg.split)[ranks.rows(cfg.boards)]
        draws = uniforms(
            ranks.world * n, cfg.max_new_tokens + len(self.game.listeners), self.generator, self.speaker.device
        )
        return boards, draws[ranks.rows(n)]

    def target_inputs(self, boards: Boards) -> tuple[VisionFeatures, torch.Tensor]:
        """The boards' targets as the speaker's frozen parts see them: vision features and the reference policy's soft
        prefix (B, M, d_lm), read from the pool's table (`TargetInputs`) or, without one, computed."""
        if self.targets is not None:
            return self.targets[boards.target_items]
        return frozen_inputs(self.speaker, self.reference, boards.target_images)

    def update(self, loss: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Backward, gradient clipping and one AdamW step on the adapter; returns (the gradient norm, the step's lr).

        A non-finite loss or gradient norm skips the AdamW step (the adapter and its optimizer state stay as they were;
        the step still counts) with a warning; `max_bad_steps` of them in a row raise TrainingDiverged. Under torchrun the
        averaged gradients make every rank see the same norm, so all skip together."""
        with self.phases("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        with self.phases("optimizer"):
            lr = self.optimizer.param_groups[0]["lr"]
            if bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
                self.optimizer.step()
                self.bad_in_a_row = 0
            else:
                self.skip_step(float(loss.detach()), float(grad_norm))
            self.scheduler.step()
            self.step += 1
        return grad_norm, lr

    def skip_step(self, loss: float, grad_norm: float) -> None:
        """Count a step whose loss or gradient is not finite, warn, and stop the run after `max_bad_steps` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.bad_in_a_row += 1
        logger.warning(
            "RL step %d skipped: loss %s, gradient norm %s (%d in a row)",
            self.step + 1,
            loss,
            grad_norm,
            self.bad_in_a_row,
        )
        if self.bad_in_a_row >= self.cfg.max_bad_steps:
            last = latest_checkpoint(self.run_dir)
            raise TrainingDiverged(
                f"{self.bad_in_a_row} RL steps in a row (up to step {self.step + 1}) had a non-finite loss or gradient; the last "
                f"checkpoint ({last or 'none yet'}) is intact: lower trainer.lr or raise trainer.beta, then resume=true"
            )

    def step_metrics(
        self,
        objective: Objective,
        outcome: Outcome,
        mask: torch.Tensor,
        grad_norm: torch.Tensor,
        lr: float,
        texts: list[str],
        boards: Boards,
    ) -> dict[str, float]:
        """A step's training metrics over every rank's captions: reward, gap, the objective's terms, accuracies, the
        captions' language metrics, and how many captions were judged."""
        o = objective
        rows = {
            "reward": o.reward, "gap": outcome.gap.float(), "kl": o.kl, "entropy": o.entropy, "return": o.total,
            "advantage": o.advantage, "tokens": mask.sum(1), **{f"acc/{name}": right.float() for name, right in outcome.correct.items()},
        }  # fmt: skip
        mine = {
            "rows": {key: value.detach().cpu() for key, value in rows.items()},
            "texts": texts,
            "items": boards.target_items,
            "loss": float(o.loss.detach()),
        }
        shares = self.ranks.gather(mine)  # every rank's, in rank order
        every = {key: torch.cat([share["rows"][key] for share in shares]) for key in rows}  # (world * B*k,) each
        metrics = {key: float(value.mean()) for key, value in every.items() if key != "advantage"}
        metrics |= {
            "advantage_std": float(every["advantage"].std()),
            "loss": float(np.mean([share["loss"] for share in shares])),
        }
        metrics |= {
            "grad_norm": float(grad_norm),
            "lr": lr,
            "captions": float(len(every["reward"])),
            "skipped_steps": float(self.skipped),
        }
        pool = boards.checked_pool()
        all_texts = [text for share in shares for text in share["texts"]]
        all_items = np.concatenate([share["items"] for share in shares])
        return metrics | caption_metrics(all_texts, pool.scenes, all_items, pool.data.lexicon)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, boards_file: Path | None = None) -> dict[str, float]:
        """The full metric set on the held-out boards (greedy and `sample/`), KL to the reference adapter; with
        `boards_file`, each board's values saved there too (`evaluate_speaker`)."""
        start = time.perf_counter()
        metrics = evaluate_speaker(
            self.speaker,
            self.game,
            self.eval_boards,
            self.reference,
            self.eval_cfg.seed,
            self.cfg.max_new_tokens,
            ranks=self.ranks,
            boards_file=boards_file,
        )
        self.wall_s["eval"] += time.perf_counter() - start
        return metrics

    # ------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        """Write checkpoints/step_NNNNNN/ (adapter + trainer state) atomically (rank 0; the others wait); returns its path.

        The listeners forget the captions they have read: a run resumed from here starts from the same empty memory, so
        it encodes the same captions in the same passes as the uninterrupted run (bit-identical on the CPU).
        """
        for listener in self.game.listeners.values():
            listener.forget_texts()
        path = self.run_dir / CHECKPOINTS / f"step_{self.step:06d}"
        if not self.ranks.main:
            self.ranks.barrier()
            return path
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.baseline.ema,
            "skipped": self.skipped,
            "multipliers": self.multipliers.state_dict(),
            "rng": {
                "numpy": self.rng.bit_generator.state,
                "generator": self.generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
            },
            "before": self.before,
            "config": asdict(self.cfg),
            "eval": asdict(self.eval_cfg),
        }
        with atomic_path(path) as tmp:
            tmp.mkdir()
            write_adapter(self.speaker.adapter, tmp / ADAPTER)
            write_state(state, tmp)
        if self.cfg.keep_last:
            for old in checkpoints(self.run_dir)[: -self.cfg.keep_last]:  # only once the new one is complete
                shutil.rmtree(old)
        self.ranks.barrier()
        return path

    def load(self, path: Path) -> None:
        """Continue from a checkpoint written by `save`: adapter weights, optimizer, scheduler, baseline, RNGs, step."""
        try:
            state = read_state(path)
            self.speaker.adapter.load_state_dict(read_adapter(path / ADAPTER).state_dict())
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (
            OSError,
            RuntimeError,
            KeyError,
            ValueError,
            TypeError,
            SafetensorError,
            pickle.UnpicklingError,
        ) as error:  # unpickling: refused unrun
            raise UserError(
                f"checkpoint {path} is unreadable or does not fit this speaker ({error}); delete it or start a new run"
            ) from error
        self.step, self.baseline.ema, self.before = state["step"], state["ema"], state["before"]
        self.skipped = state.get("skipped", 0)  # checkpoints written before steps could be skipped had none
        if "multipliers" in state:  # checkpoints written before constrained subtraction ran with the fixed values
            self.multipliers.load_state_dict(state["multipliers"])
        self.game.reward = self.played_reward()
        rng = state["rng"]
        self.rng.bit_generator.state = rng["numpy"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])

    # ------------------------------------------------------------ the loop

    def fit(self, resume: bool = False) -> dict[str, dict[str, float]]:
        """Train up to cfg.steps (from the run's latest checkpoint with resume); returns {"before", "after"} metrics."""
        cfg = self.cfg
        checkpoint = start_from(self.run_dir, resume)
        if checkpoint is not None:
            self.load(checkpoint)
        log = RunLog(self.run_dir, self.step if resume else None, cfg.steps, enabled=self.ranks.main)
        try:
            if not resume:
                self.before = self.evaluate()
                log.write(0, self.before, "eval/")
            bar = tqdm(
                total=cfg.steps,
                initial=self.step,
                desc="RL",
                disable=not (cfg.progress and self.ranks.main),
                dynamic_ncols=True,
            )
            while self.step < cfg.steps:
                start = time.perf_counter()
                metrics = self.train_step()
                self.wall_s["rl"] += time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(
                    reward=f"{metrics['reward']:.3f}", gap=f"{metrics['gap']:.3f}", kl=f"{metrics['kl']:.3f}"
                )
                if self.step % cfg.log_every == 0:
                    log.write(self.step, metrics, "train/")
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    log.write(self.step, self.evaluate(), "eval/")
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
            bar.close()
            after = self.evaluate(self.run_dir / EVAL_BOARDS)
            log.write(self.step, after, "eval/")
            if latest_checkpoint(self.run_dir) != self.run_dir / CHECKPOINTS / f"step_{self.step:06d}":
                self.save()
        finally:
            log.close()
        return {"before": self.before, "after": after}


def kept_on_resume(line: str, resumed: int, final: int) -> bool:
    """Whether a metrics.jsonl line stays when a run resumes from step `resumed` (training up to `final`): every line up
    to that step, but the final evaluation's at `final` (the resumed run evaluates again) and a line torn by a kill
    during its write."""
    try:
        record = json.loads(line)
        step = record["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    if step == resumed == final:
        return not any(key.startswith("eval/") for key in record)
    return step <= resumed


class RunLog:
    """metrics.jsonl (one JSON object per logged step) and TensorBoard events in the run directory.

    Resuming from step s drops what an interrupted run logged after s (and its final evaluation, when s is the last
    step), so each step is logged once. A disabled log (ranks other than 0) writes nothing.
    """

    def __init__(
        self, run_dir: Path, resumed_step: int | None = None, final_step: int = 0, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        kept = []
        if resumed_step is not None and self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if kept_on_resume(line, resumed_step, final_step)
            ]
        self.path.write_text("".join(line + "\n" for line in kept))
        purge = None if resumed_step is None else resumed_step + 1
        from torch.utils.tensorboard import SummaryWriter  # imported on use: it takes seconds

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def write(self, step: int, metrics: dict[str, float], prefix: str) -> None:
        """Log metrics of a step under `prefix` (train/ or eval/)."""
        if not self.enabled:
            return
        with open(self.path, "a") as out:
            out.write(json.dumps({"step": step, **{f"{prefix}{k}": v for k, v in metrics.items()}}) + "\n")
        for key, value in metrics.items():
            self.writer.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
