"""Listener recipe: train small open_clip CLIPs contrastively on the world, and measure them per attribute."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import open_clip
import torch
from torch import nn
from tqdm.auto import tqdm

from listener_sub.models.listener import image_normalizer, register_model_configs
from listener_sub.perception import make_perception, to_float_images
from listener_sub.world import (
    ATTRIBUTES,
    WORLD_VOCAB,
    CaptionSpec,
    WorldConfig,
    realize,
    render,
    sample_scenes,
)
from listener_sub.world.grammar import PREFIXES

N_VALUES = np.array([WORLD_VOCAB.sizes()[a] for a in ATTRIBUTES], dtype=np.int64)  # (A,) values per attribute
RADIX = np.concatenate([np.cumprod(N_VALUES[::-1])[::-1][1:], [1]]).astype(np.int64)  # (A,) mixed-radix place values
N_COMBOS = int(N_VALUES.prod())  # 540 attribute combinations of one object
FULL_MASK = (1 << len(ATTRIBUTES)) - 1  # bit a set: attribute a is mentioned
MAX_LOGIT_SCALE = math.log(100.0)


def combo_ids(attrs: np.ndarray) -> np.ndarray:
    """(..., A) attribute value indices -> (...) combination ids in [0, N_COMBOS)."""
    return (np.asarray(attrs, dtype=np.int64) * RADIX).sum(-1)


def combo_attrs(ids: np.ndarray) -> np.ndarray:
    """(...) combination ids -> (..., A) attribute value indices."""
    return (np.asarray(ids, dtype=np.int64)[..., None] // RADIX) % N_VALUES


def mask_of(attributes: Sequence[str]) -> int:
    """Bit mask of the named attributes."""
    unknown = set(attributes) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attribute(s) {sorted(unknown)}; choose from {', '.join(ATTRIBUTES)}")
    return sum(1 << ATTRIBUTES.index(a) for a in attributes)


def caption_text(combo: int, mask: int, prefix: int = 0) -> str:
    """The canonical caption naming the attributes in `mask` of the object `combo`."""
    values = combo_attrs(combo)
    obj = {a: WORLD_VOCAB.values[a][int(values[i])] for i, a in enumerate(ATTRIBUTES) if mask >> i & 1}
    return realize(CaptionSpec((obj,), None, prefix))


class CaptionTokens:
    """Token rows of canonical captions keyed by (object combo, mention mask, prefix), tokenized lazily once."""

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        self.tokenizer = tokenizer
        self.n_keys = N_COMBOS * (FULL_MASK + 1) * len(PREFIXES)
        self.table: torch.Tensor | None = None  # (n_keys, L) int64, filled on demand
        self.filled = np.zeros(self.n_keys, dtype=bool)

    def __call__(self, combos: np.ndarray, masks: np.ndarray, prefixes: np.ndarray | None = None) -> torch.Tensor:
        """(N,) combos, masks, prefixes -> (N, L) int64 tokens."""
        prefixes = np.zeros_like(combos) if prefixes is None else prefixes
        keys = (np.asarray(combos) * (FULL_MASK + 1) + np.asarray(masks)) * len(PREFIXES) + np.asarray(prefixes)  # (N,)
        missing = np.unique(keys[~self.filled[keys]])
        if len(missing):
            prefix, rest = missing % len(PREFIXES), missing // len(PREFIXES)
            texts = [caption_text(int(c), int(m), int(p)) for c, m, p in zip(rest // (FULL_MASK + 1), rest % (FULL_MASK + 1), prefix)]
            rows = self.tokenizer(texts)  # (M, L)
            if self.table is None:
                self.table = torch.zeros(self.n_keys, rows.shape[1], dtype=rows.dtype)
            self.table[torch.from_numpy(missing)] = rows
            self.filled[missing] = True
        return self.table[torch.from_numpy(keys)]


def perceive(images: np.ndarray, perception: nn.Module, model: nn.Module) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) as the listener sees them, in the model's normalisation."""
    mean, std = image_normalizer(model)
    with torch.no_grad():
        return (perception(to_float_images(images)) - mean) / std


def multi_positive_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss whose targets spread over every true pair: match (B_text, B_image) bool, diagonal True."""
    logits = logit_scale * text_features @ image_features.T  # (B, B) texts x images
    t2i = match.float() / match.sum(1, keepdim=True)  # (B, B) each caption's true images
    i2t = match.T.float() / match.T.sum(1, keepdim=True)  # (B, B) each image's true captions
    loss_t = -(t2i * logits.log_softmax(1)).sum(1).mean()
    loss_i = -(i2t * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_t + loss_i) / 2


@dataclass
class ScenePool:
    """Rendered training scenes, indexed by object combination for hard-negative groups."""

    images: np.ndarray  # (N, H, W, 3) uint8
    attrs: np.ndarray  # (N, A) referent attributes
    order: np.ndarray  # (N,) pool indices sorted by combo
    start: np.ndarray  # (N_COMBOS,) first position of each combo in `order`
    count: np.ndarray  # (N_COMBOS,) pool scenes of each combo

    @classmethod
    def build(cls, world: WorldConfig, size: int, split: str = "train", start: int = 0) -> "ScenePool":
        """Sample and render `size` scenes of a split."""
        scenes = sample_scenes(world, split, start, size)
        attrs = scenes.attrs[:, 0]  # (N, A)
        combos = combo_ids(attrs)
        order = np.argsort(combos, kind="stable")
        first = np.searchsorted(combos[order], np.arange(N_COMBOS))
        count = np.searchsorted(combos[order], np.arange(N_COMBOS), side="right") - first
        return cls(render(scenes, world.image_size), attrs, order, first, count)

    def pick(self, combos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N,) combos -> (N,) random pool indices of those combos, -1 where the pool has none."""
        pos = self.start[combos] + (rng.random(len(combos)) * self.count[combos]).astype(np.int64)
        return np.where(self.count[combos] > 0, self.order[np.minimum(pos, len(self.order) - 1)], -1)

    def batch(self, size: int, group_size: int, group_fraction: float, rng: np.random.Generator) -> np.ndarray:
        """(size,) pool indices: hard-negative groups (a base scene and variants differing in one attribute) + random scenes."""
        n_grouped = int(size * group_fraction) // group_size * group_size
        idx = rng.integers(0, len(self.attrs), size)  # (size,)
        if n_grouped and group_size > 1:
            base = self.attrs[idx[:n_grouped:group_size]]  # (G, A)
            variant = np.repeat(base, group_size, axis=0)  # (n_grouped, A)
            which = rng.integers(0, len(ATTRIBUTES), n_grouped)  # attribute each variant changes
            shift = 1 + (rng.random(n_grouped) * (N_VALUES[which] - 1)).astype(np.int64)
            rows = np.arange(n_grouped)
            variant[rows, which] = (variant[rows, which] + shift) % N_VALUES[which]
            found = self.pick(combo_ids(variant), rng)
            found[::group_size] = idx[:n_grouped:group_size]  # group heads stay the base scene
            idx[:n_grouped] = np.where(found >= 0, found, idx[:n_grouped])
        return idx


def sample_masks(
    n: int, mention: Sequence[float], full_prob: float, rng: np.random.Generator, allowed: Sequence[str] = ATTRIBUTES
) -> np.ndarray:
    """(n,) non-empty mention masks over the allowed attributes: each named with its probability; some name all."""
    allowed_bits = np.array([a in allowed for a in ATTRIBUTES])
    bits = (rng.random((n, len(ATTRIBUTES))) < np.asarray(mention)) & allowed_bits  # (n, A)
    masks = (bits * (1 << np.arange(len(ATTRIBUTES)))).sum(1)
    fallback = 1 << rng.choice(np.flatnonzero(allowed_bits), n)  # one allowed attribute
    masks = np.where(masks == 0, fallback, masks)
    return np.where(rng.random(n) < full_prob, mask_of(allowed), masks)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (no gains, biases, embeddings or logit scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_listener(
    model_name: str,
    perception_spec: str | Mapping[str, Any],
    world: WorldConfig,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    *,
    weight_decay: float = 0.05,
    warmup: int = 20,
    pool_size: int = 16384,
    group_size: int = 8,
    group_fraction: float = 0.5,
    mention: Sequence[float] = (0.3, 0.7, 0.5, 0.5, 0.5),  # per attribute, ATTRIBUTES order
    full_prob: float = 0.2,
    prefix_probs: Sequence[float] = (0.8, 0.1, 0.1),
    all_combos: bool = True,
    exclude: Sequence[str] = (),
    threads: int | None = None,
    progress: bool = True,
) -> open_clip.CLIP:
    """Train a listener CLIP contrastively on the world through its perception (multi-positive CLIP loss).

    all_combos: train on every (colour, shape) pair, held-out ones included, as a pretrained CLIP would
    have seen them (otherwise, to a colour-blind listener, "a red object" means "not a circle").
    exclude: attributes whose words never appear in the training captions (the listener's knowledge).
    """
    allowed = [a for a in ATTRIBUTES if a not in exclude]
    if not allowed or len(allowed) + len(set(exclude)) != len(ATTRIBUTES):
        raise ValueError(f"knowledge.exclude={list(exclude)} must name some but not all of: {', '.join(ATTRIBUTES)}")
    if threads:
        torch.set_num_threads(threads)
    register_model_configs()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = open_clip.create_model(model_name)  # random init; sets model.visual.preprocess_cfg
    model.train()
    tokenizer = open_clip.get_tokenizer(model_name)
    perception = make_perception(perception_spec)
    tokens = CaptionTokens(tokenizer)
    pool = ScenePool.build(dataclasses.replace(world, heldout_combos=[]) if all_combos else world, pool_size)
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    prefix_p = np.asarray(prefix_probs, dtype=np.float64) / sum(prefix_probs)
    bar = tqdm(range(steps), desc=f"listener ({perception!r})", disable=not progress, leave=False)
    for step in bar:
        idx = pool.batch(batch_size, group_size, group_fraction, rng)  # (B,)
        attrs = pool.attrs[idx]  # (B, A)
        masks = sample_masks(batch_size, mention, full_prob, rng, allowed)  # (B,)
        prefixes = rng.choice(len(prefix_p), size=batch_size, p=prefix_p)
        text = tokens(combo_ids(attrs), masks, prefixes)  # (B, L)
        images = perceive(pool.images[idx], perception, model)  # (B, 3, H, W)
        bits = torch.from_numpy((masks[:, None] >> np.arange(len(ATTRIBUTES))) & 1).bool()  # (B, A)
        a = torch.from_numpy(attrs)
        match = ((a[:, None, :] == a[None, :, :]) | ~bits[:, None, :]).all(-1)  # (B, B) caption i true of image j
        image_features, text_features, logit_scale = model(images, text)
        loss = multi_positive_clip_loss(image_features, text_features, logit_scale, match)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{logit_scale.item():.1f}")
    model.eval()
    return model


@torch.no_grad()
def encode_texts(model: open_clip.CLIP, text: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(N, L) tokens -> (N, D) unit-norm text features."""
    return torch.cat([model.encode_text(t, normalize=True) for t in text.split(chunk)])


@torch.no_grad()
def encode_images(model: open_clip.CLIP, perception: nn.Module, images: np.ndarray, chunk: int = 512) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> (N, D) unit-norm image features, through the listener's perception."""
    out = [model.encode_image(perceive(images[i : i + chunk], perception, model), normalize=True) for i in range(0, len(images), chunk)]
    return torch.cat(out)


EVAL_CONDITIONS: dict[str, tuple[str, ...]] = {
    "full_caption": ATTRIBUTES,
    "no_color": tuple(a for a in ATTRIBUTES if a != "color"),
    **{f"only/{a}": (a,) for a in ATTRIBUTES},
}


@torch.no_grad()
def evaluate_listener(
    model: open_clip.CLIP,
    tokenizer: Callable[[list[str]], torch.Tensor],
    perception: nn.Module | str | Mapping[str, Any],
    world: WorldConfig,
    n_boards: int = 1000,
    board_size: int = 4,
    seed: int = 0,
    split: str = "test",
) -> dict[str, float]:
    """Accuracy on boards (target + random split distractors) for captions naming given attributes, and tie-aware ceilings.

    Keys: acc_<cond> and ceiling_<cond> for cond in full_caption, no_color, only/<attribute>; acc_color_only.
    """
    was_training = model.training
    model.eval()
    if not isinstance(perception, nn.Module):
        perception = make_perception(perception)
    rng = np.random.default_rng(seed)
    scenes = sample_scenes(world, split, 0, n_boards * board_size)
    boards = rng.permutation(n_boards * board_size).reshape(n_boards, board_size)  # (n, N) scene indices
    slot = rng.integers(0, board_size, n_boards)  # (n,) target position
    target = boards[np.arange(n_boards), slot]  # (n,)
    features = encode_images(model, perception, render(scenes, world.image_size))  # (S, D)
    attrs = scenes.attrs[:, 0]  # (S, A)
    same = attrs[boards] == attrs[target][:, None, :]  # (n, N, A)
    tokens = CaptionTokens(tokenizer)
    metrics: dict[str, float] = {}
    for cond, names in EVAL_CONDITIONS.items():
        mask = mask_of(names)
        text = encode_texts(model, tokens(combo_ids(attrs[target]), np.full(n_boards, mask)))  # (n, D)
        scores = torch.einsum("nd,nkd->nk", text, features[torch.from_numpy(boards)])  # (n, N)
        choice = scores.argmax(1).numpy()
        used = np.array([a in names for a in ATTRIBUTES])
        ties = same[..., used].all(-1).sum(1)  # (n,) board images the caption is true of
        metrics[f"acc_{cond}"] = float((choice == slot).mean())
        metrics[f"ceiling_{cond}"] = float((1.0 / ties).mean())
    metrics["acc_color_only"] = metrics["acc_only/color"]
    if was_training:
        model.train()
    return metrics


def save_listener(model: open_clip.CLIP, path: str | Path) -> Path:
    """Save as an open_clip checkpoint that create_model_and_transforms(name, pretrained=path) loads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, path)
    return path
