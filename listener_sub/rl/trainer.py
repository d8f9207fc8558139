"""The RL loop: REINFORCE with listener subtraction on the speaker's adapter, readable top to bottom in `train_step`.

Each step draws B train boards, samples k captions per target from the policy (temperature, no top-k / top-p), lets
the game's listeners judge them, folds the per-token KL to the reference policy (the frozen captioning adapter, k1
estimator) and an optional entropy bonus into each caption's reward, subtracts a baseline and takes one AdamW step on
the adapter's parameters; the vision tower and the LM stay frozen. Under `constraint` bounds, the reward's lam and the
KL coefficient are Lagrange multipliers, one dual step after each update. All randomness comes from the trainer's own
generators, which checkpoints save, so a resumed run continues exactly where the saved one stopped.

Under torchrun every rank draws the same global batch of boards and random numbers and plays its own share of them;
the adapter is wrapped in DistributedDataParallel (its gradients averaged over ranks), the step's metrics are computed
over every rank's captions, and rank 0 logs and checkpoints. P ranks of B boards each therefore train like one process
of P*B boards.

    trainer = Trainer(RLConfig(steps=250), speaker, game, "runs/colorblind")
    result = trainer.fit()  # {"before": metrics, "after": metrics}
"""

from __future__ import annotations

import logging
import pickle
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn
from tqdm.auto import tqdm

from listener_sub.data.imageset import Pixels
from listener_sub.distributed import Ranks
from listener_sub.draws import uniforms
from listener_sub.errors import TrainingDiverged, UserError
from listener_sub.evaluation import EvalConfig, evaluate_speaker, held_out_boards, warm_pool
from listener_sub.game import Boards, Game, Outcome
from listener_sub.metrics import caption_metrics
from listener_sub.models.speaker import Speaker, VisionFeatures
from listener_sub.optim import adamw, lr_scheduler
from listener_sub.rl.config import RLConfig
from listener_sub.rl.objective import Baseline, Multipliers, Objective, check_constraint, reinforce
from listener_sub.runs import (
    EVAL_BOARDS,
    RunLog,
    checkpoint_dir,
    latest_checkpoint,
    read_state,
    start_from,
    write_checkpoint,
)

logger = logging.getLogger(__name__)


class Trainer:
    """REINFORCE with a KL penalty on the speaker's adapter, played through the batched game core (on each of
    `ranks`)."""

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
        self.reference = speaker.reference_policy()  # the captioning policy, frozen
        self.speaker.eval()  # no dropout: the sampled and the scored policy are the same
        self.policy = policy_module(speaker.trainable, ranks, cfg.compile)  # what the step's prefix goes through
        self.params = [p for p in speaker.trainable.parameters() if p.requires_grad]
        self.optimizer = adamw(self.params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.scheduler = lr_scheduler(self.optimizer, cfg.schedule, cfg.steps)
        self.baseline = Baseline(cfg.baseline, cfg.k, cfg.ema_decay, ranks)
        check_constraint(cfg.constraint, game.reward)
        # as configured; under a subtracted-accuracy bound the game plays it with the learnt lam
        self.reward = game.reward
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
        self.targets = TargetInputs.of_pool(speaker, self.reference, game.pool(cfg.split).images)

    # ------------------------------------------------------------ one step

    def train_step(self) -> dict[str, float]:
        """One REINFORCE update on B fresh boards; returns the step's training metrics (`self.phases` times each
        part)."""
        cfg, speaker, phase = self.cfg, self.speaker, self.phases
        with phase("boards"):
            boards, draws = self.deal()  # B boards; (B*k, tokens + listeners) uniform draws
        with phase("vision"):
            features, ref_prefix = self.target_inputs(boards)  # the targets' vision features, reference prefix
        with phase("sampling"):
            prefix = speaker.adapt(features, self.policy)  # (B, M, d_lm) the policy's soft prefix, with grad
            token_draws = draws[:, : cfg.max_new_tokens]
            gen = speaker.sample(
                prefix, cfg.k, cfg.temperature, cfg.top_k, cfg.top_p, cfg.max_new_tokens, draws=token_draws
            )  # B*k captions, row b*k+j
        with phase("listeners"):
            outcome = self.game.play(gen.texts, boards.repeat(cfg.k), draws=draws[:, cfg.max_new_tokens :])
        with phase("teacher-forced pass"):
            logp, mask = speaker.log_probs(prefix, gen.tokens, gen.lengths, cfg.k)  # (B*k, L)
        with phase("reference pass"), torch.no_grad():
            ref_logp, _ = speaker.log_probs(ref_prefix, gen.tokens, gen.lengths, cfg.k)
        objective = self.objective(outcome.reward, logp, ref_logp)

        grad_norm, lr = self.update(objective.loss)
        with phase("bookkeeping"):
            metrics = self.step_metrics(objective, outcome, mask, grad_norm, lr, gen.texts, boards.repeat(cfg.k))
        self.dual_step(metrics)
        return metrics

    def deal(self) -> tuple[Boards, torch.Tensor]:
        """This rank's share of the step's global batch: its B boards, and its (B*k, tokens + listeners) rows of the
        step's random numbers (each caption's token draws, then each listener's pick). Every rank draws the whole
        batch."""
        cfg, ranks = self.cfg, self.ranks
        n = cfg.boards * cfg.k  # captions this rank samples
        boards = self.game.sample(ranks.world * cfg.boards, self.rng, cfg.split)[ranks.rows(cfg.boards)]
        width = cfg.max_new_tokens + len(self.game.listeners)
        draws = uniforms(ranks.world * n, width, self.generator, self.speaker.device)  # (world * B*k, width)
        return boards, draws[ranks.rows(n)]

    def target_inputs(self, boards: Boards) -> tuple[VisionFeatures, torch.Tensor]:
        """The boards' targets as the speaker's frozen parts see them: vision features and the reference policy's soft
        prefix (B, M, d_lm), read from the pool's table (`TargetInputs`) or, without one, computed."""
        if self.targets is not None:
            return self.targets[boards.target_items]
        return frozen_inputs(self.speaker, self.reference, boards.target_images)

    def objective(self, game_reward: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor) -> Objective:
        """The KL-regularised REINFORCE loss of the step's captions, with the current KL coefficient."""
        return reinforce(game_reward, logp, ref_logp, self.baseline, self.multipliers.beta, self.cfg.entropy)

    def update(self, loss: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Backward, gradient clipping and one AdamW step on the adapter; returns (the gradient norm, the step's lr).

        A non-finite loss or gradient norm skips the AdamW step (the adapter and its optimizer state stay as they were;
        the step still counts) with a warning; `max_bad_steps` of them in a row raise TrainingDiverged. Under torchrun
        the averaged gradients make every rank see the same norm, so all skip together."""
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
                f"{self.bad_in_a_row} RL steps in a row (up to step {self.step + 1}) had a non-finite loss or "
                f"gradient; the last checkpoint ({last or 'none yet'}) is intact: lower trainer.lr or raise "
                "trainer.beta, then resume=true"
            )

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
            "advantage": o.advantage, "tokens": mask.sum(1),
            **{f"acc/{name}": right.float() for name, right in outcome.correct.items()},
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
        metrics["advantage_std"] = float(every["advantage"].std())
        metrics["loss"] = float(np.mean([share["loss"] for share in shares]))
        metrics |= {"grad_norm": float(grad_norm), "lr": lr, "captions": float(len(every["reward"]))}
        metrics["skipped_steps"] = float(self.skipped)
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

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the adapter's weights: optimizer, scheduler, baseline, multipliers,
        every RNG, the step, and the metrics before training."""
        return {
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` (a state without a skipped count or multipliers -- the first checkpoint format
        -- skipped no step and played the fixed lam and beta)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.baseline.ema, self.before = state["step"], state["ema"], state["before"]
        self.skipped = state.get("skipped", 0)
        if "multipliers" in state:
            self.multipliers.load_state_dict(state["multipliers"])
        self.game.reward = self.played_reward()
        rng = state["rng"]
        self.rng.bit_generator.state = rng["numpy"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])

    def save(self) -> Path:
        """Write checkpoints/step_NNNNNN/ (adapter + trainer state) atomically (rank 0; the others wait); returns its
        path.

        The listeners forget the captions they have read: a run resumed from here starts from the same empty memory, so
        it encodes the same captions in the same passes as the uninterrupted run (bit-identical on the CPU).
        """
        for listener in self.game.listeners.values():
            listener.forget_texts()
        path = checkpoint_dir(self.run_dir, self.step)
        if self.ranks.main:
            write_checkpoint(path, self.speaker.save_trainable, self.state_dict(), self.cfg.keep_last)
        self.ranks.barrier()
        return path

    def load(self, path: Path) -> None:
        """Continue from a checkpoint written by `save`: adapter weights, optimizer, scheduler, baseline, RNGs, step."""
        try:
            state = read_state(path)  # first: a state that is not a checkpoint's is refused before anything is read
            self.speaker.load_trainable(path)
            self.load_state_dict(state)
        except (
            OSError,
            RuntimeError,
            KeyError,
            ValueError,
            TypeError,
            SafetensorError,
            pickle.UnpicklingError,
        ) as error:
            raise UserError(  # an unpickling error: a pickle that carries code, refused before it runs
                f"checkpoint {path} is unreadable or does not fit this speaker ({error}); delete it or start a new run"
            ) from error

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
            show = cfg.progress and self.ranks.main
            bar = tqdm(total=cfg.steps, initial=self.step, desc="RL", disable=not show, dynamic_ncols=True)
            while self.step < cfg.steps:
                start = time.perf_counter()
                metrics = self.train_step()
                self.wall_s["rl"] += time.perf_counter() - start
                bar.update(1)
                bar.set_postfix({key: f"{metrics[key]:.3f}" for key in ("reward", "gap", "kl")})
                if self.step % cfg.log_every == 0:
                    log.write(self.step, metrics, "train/")
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    log.write(self.step, self.evaluate(), "eval/")
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
            bar.close()
            after = self.evaluate(self.run_dir / EVAL_BOARDS)
            log.write(self.step, after, "eval/")
            if latest_checkpoint(self.run_dir) != checkpoint_dir(self.run_dir, self.step):
                self.save()
        finally:
            log.close()
        return {"before": self.before, "after": after}


# ---------------------------------------------------------------- the step's helpers


def policy_module(adapter: nn.Module, ranks: Ranks, compile: bool) -> nn.Module:
    """What the step's prefix goes through: the adapter itself; under torchrun wrapped in DistributedDataParallel
    (gradients averaged over ranks, rank 0's weights to start); with `compile`, torch.compile'd on the first step (the
    weights stay the adapter's own)."""
    policy = adapter
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        policy = DistributedDataParallel(adapter)
    return torch.compile(policy) if compile else policy


@torch.no_grad()
def frozen_inputs(speaker: Speaker, reference: nn.Module, images: Pixels) -> tuple[Any, Any]:
    """What the speaker's frozen parts make of images: its inputs (vision features) and what the reference policy
    reads (the reference's soft prefix (B, M, d_lm))."""
    features = speaker.encode(images)  # (B, ...) what the speaker sees
    return features, speaker.adapt(features, reference)


class TargetInputs:
    """What the speaker's frozen parts make of each image of the training pool, computed once, `chunk` images a pass in
    pool order (a resumed run reads the same numbers): its inputs (the adapter speaker's vision features, a VLM
    speaker's prompt and pixels) and what the reference policy reads (the adapter speaker's reference prefix).

    Built whenever the table fits in memory (`of_pool`): the trainer already encodes the whole pool once for each
    listener.
    """

    def __init__(self, speaker: Speaker, reference: nn.Module, images: Pixels, chunk: int = 256) -> None:
        starts = range(0, len(images), chunk)
        parts = [frozen_inputs(speaker, reference, images[start : start + chunk]) for start in starts]
        self.features = concat([features for features, _ in parts])  # (P, ...)
        self.reference = concat([prefix for _, prefix in parts])  # (P, ...)

    @classmethod
    def of_pool(
        cls, speaker: Speaker, reference: nn.Module, images: Pixels, budget: int = 1 << 30
    ) -> TargetInputs | None:
        """The table of `images` when it takes at most `budget` bytes, else None (the step computes its targets')."""
        return cls(speaker, reference, images) if cls.fits(speaker, reference, images, budget) else None

    @staticmethod
    def fits(speaker: Speaker, reference: nn.Module, images: Pixels, budget: int = 1 << 30) -> bool:
        """Whether the table of `images` takes at most `budget` bytes (measured on one image)."""
        return len(images) * nbytes(frozen_inputs(speaker, reference, images[:1])) <= budget

    def __getitem__(self, items: np.ndarray) -> tuple[Any, Any]:
        """The (B,) pool images' inputs and what the reference reads of them."""
        rows = torch.as_tensor(items)
        return self.features[rows], self.reference[rows]


def concat(parts: list[Any]) -> Any:
    """Batches of a speaker's inputs joined along their rows: tensors, or a type with its own `cat`."""
    return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else type(parts[0]).cat(parts)


def nbytes(obj: Any) -> int:
    """The bytes of every tensor in a speaker's inputs (tensors, dataclasses, dicts, tuples of them)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if is_dataclass(obj):
        return sum(nbytes(getattr(obj, f.name)) for f in fields(obj))
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(v) for v in obj)
    return 0


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
