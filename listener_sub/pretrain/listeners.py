"""Listener recipe: train small open_clip CLIPs contrastively on the world, and measure them per attribute."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from listener_sub.data import ImageSet
from listener_sub.data.imageset import Pixels
from listener_sub.images import model_input
from listener_sub.models.listener import register_model_configs
from listener_sub.models.vision import clip_preprocess
from listener_sub.optim import Schedule, adamw, key_fields, lr_scheduler
from listener_sub.perception import Perception, make_perception
from listener_sub.pretrain.progress import StepProgress
from listener_sub.world import ATTRIBUTES, PRETRAIN_SPLIT, WorldConfig, render, sample_scenes
from listener_sub.world.combos import WORLD_COMBOS, Combos
from listener_sub.world.grammar import PREFIXES

if TYPE_CHECKING:
    import open_clip


class CaptionTokens:
    """Canonical captions keyed by (object combo, mention mask, prefix), each key mapped lazily to its distinct text.

    Many keys share a text ("a red object." names one attribute of many combos), so a batch is encoded once per
    distinct text: `texts` maps keys to text ids, `token_rows` gives the texts' token rows.
    """

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor], combos: Combos = WORLD_COMBOS) -> None:
        self.tokenizer, self.combos = tokenizer, combos
        self.n_masks = combos.full_mask + 1
        self.n_keys = combos.count * self.n_masks * len(PREFIXES)
        self.key_text = np.full(self.n_keys, -1, dtype=np.int64)  # (n_keys,) text id of each key, -1 until first use
        self.text_ids: dict[str, int] = {}  # distinct caption text -> its row of `table`
        self.table: torch.Tensor | None = None  # (n_texts, L) int64 token rows of the distinct texts

    def keys(self, combos: np.ndarray, masks: np.ndarray, prefixes: np.ndarray | None = None) -> np.ndarray:
        """(N,) combos, masks, prefixes -> (N,) caption keys."""
        prefixes = np.zeros_like(combos) if prefixes is None else prefixes
        return (np.asarray(combos) * self.n_masks + np.asarray(masks)) * len(PREFIXES) + np.asarray(prefixes)

    def texts(self, keys: np.ndarray) -> np.ndarray:
        """(N,) caption keys -> (N,) ids of their distinct texts (new texts tokenized once)."""
        missing = np.unique(keys[self.key_text[keys] < 0])
        if len(missing):
            prefix, rest = missing % len(PREFIXES), missing // len(PREFIXES)
            texts = [
                self.combos.caption(int(c), int(m), int(p))
                for c, m, p in zip(rest // self.n_masks, rest % self.n_masks, prefix)
            ]
            new = list(dict.fromkeys(t for t in texts if t not in self.text_ids))
            if new:
                rows = self.tokenizer(new)  # (T_new, L)
                self.table = rows if self.table is None else torch.cat([self.table, rows])
                self.text_ids.update((text, len(self.text_ids)) for text in new)
            self.key_text[missing] = [self.text_ids[t] for t in texts]
        return self.key_text[keys]

    def token_rows(self, text_ids: np.ndarray) -> torch.Tensor:
        """(N,) text ids -> (N, L) int64 tokens."""
        return self.table[torch.from_numpy(np.asarray(text_ids))]

    def __call__(self, combos: np.ndarray, masks: np.ndarray, prefixes: np.ndarray | None = None) -> torch.Tensor:
        """(N,) combos, masks, prefixes -> (N, L) int64 tokens."""
        return self.token_rows(self.texts(self.keys(combos, masks, prefixes)))


def perceive(
    images: np.ndarray, perception: nn.Module, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) as the listener sees them, in the model's input (`model_input`), laid
    out channels-last (the layout the CPU's convolutions run fastest in)."""
    with torch.no_grad():
        return model_input(images, size, mean, std, perception).contiguous(memory_format=torch.channels_last)


def _spread(match: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) bool -> each row's targets spread evenly over its true entries, and which rows have any."""
    count = match.sum(1, keepdim=True)  # (B, 1)
    return match.float() / count.clamp_min(1), (count > 0).squeeze(1).float()


def _mean_over(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1)


def multi_positive_clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, match: torch.Tensor
) -> torch.Tensor:
    """Symmetric CLIP loss whose targets spread over every true pair: match (B_text, B_image) bool.

    A caption (row) or image (column) with no true partner in the batch is left out of its direction's mean.
    """
    logits = logit_scale * text_features @ image_features.T  # (B, B) texts x images
    t2i, has_t = _spread(match)  # each caption's true images
    i2t, has_i = _spread(match.T)  # each image's true captions
    loss_t = _mean_over(-(t2i * logits.log_softmax(1)).sum(1), has_t)
    loss_i = _mean_over(-(i2t * logits.T.log_softmax(1)).sum(1), has_i)
    return (loss_t + loss_i) / 2


def multi_positive_clip_floor(match: torch.Tensor) -> torch.Tensor:
    """The least multi_positive_clip_loss can be for this match (a perfect listener's: log of the true partners)."""
    count_t, count_i = match.sum(1).float(), match.sum(0).float()
    return (
        _mean_over(count_t.clamp_min(1).log(), (count_t > 0).float())
        + _mean_over(count_i.clamp_min(1).log(), (count_i > 0).float())
    ) / 2


@dataclass
class ScenePool:
    """Training scenes with their referents' attributes, indexed by object combination for hard-negative groups."""

    images: Pixels  # (N, H, W, 3) uint8
    attrs: np.ndarray  # (N, A) referent attributes
    combos: Combos  # the scenes' vocabulary's attribute combinations
    order: np.ndarray  # (N,) pool indices sorted by combo
    start: np.ndarray  # (combos.count,) first position of each combo in `order`
    count: np.ndarray  # (combos.count,) pool scenes of each combo

    @classmethod
    def build(cls, world: WorldConfig, size: int, split: str = PRETRAIN_SPLIT, start: int = 0) -> ScenePool:
        """Sample and render `size` scenes of a split of the world."""
        scenes = sample_scenes(world, split, start, size)
        return cls.of(render(scenes, world.image_size), scenes.attrs[:, 0], WORLD_COMBOS)

    @classmethod
    def of(cls, images: Pixels, attrs: np.ndarray, combos: Combos) -> ScenePool:
        """Images and their referents' (N, A) attributes."""
        ids = combos.ids(attrs)
        order = np.argsort(ids, kind="stable")
        first = np.searchsorted(ids[order], np.arange(combos.count))
        count = np.searchsorted(ids[order], np.arange(combos.count), side="right") - first
        return cls(images, attrs, combos, order, first, count)

    def pick(self, combos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N,) combos -> (N,) random pool indices of those combos, -1 where the pool has none."""
        pos = self.start[combos] + (rng.random(len(combos)) * self.count[combos]).astype(np.int64)
        return np.where(self.count[combos] > 0, self.order[np.minimum(pos, len(self.order) - 1)], -1)

    def batch(
        self,
        size: int,
        group_size: int,
        group_fraction: float,
        rng: np.random.Generator,
        attribute_p: np.ndarray | None = None,
        value_p: np.ndarray | None = None,
    ) -> np.ndarray:
        """(size,) pool indices: hard-negative groups (a base scene and variants differing in one attribute) + random
        scenes.

        attribute_p: (A,) how often each attribute is the one a variant changes (uniform when None).
        value_p: (A, V, V) P(new value | old value) of a changed attribute, zero diagonal (uniform when None).
        """
        n_grouped = int(size * group_fraction) // group_size * group_size
        idx = rng.integers(0, len(self.attrs), size)  # (size,)
        if n_grouped and group_size > 1:
            n_values = self.combos.n_values
            base = self.attrs[idx[:n_grouped:group_size]]  # (G, A)
            variant = np.repeat(base, group_size, axis=0)  # (n_grouped, A)
            which = rng.choice(len(n_values), n_grouped, p=attribute_p)  # attribute each variant changes
            rows = np.arange(n_grouped)
            old = variant[rows, which]
            if value_p is None:
                shift = 1 + (rng.random(n_grouped) * (n_values[which] - 1)).astype(np.int64)
                variant[rows, which] = (old + shift) % n_values[which]
            else:
                cdf = value_p[which, old].cumsum(1)  # (n_grouped, V)
                variant[rows, which] = (cdf < rng.random(n_grouped)[:, None] * cdf[:, -1:]).sum(1)
            found = self.pick(self.combos.ids(variant), rng)
            found[::group_size] = idx[:n_grouped:group_size]  # group heads stay the base scene
            idx[:n_grouped] = np.where(found >= 0, found, idx[:n_grouped])
        return idx


def sample_masks(
    n: int,
    mention: Sequence[float],
    full_prob: float,
    rng: np.random.Generator,
    allowed: Sequence[str] = ATTRIBUTES,
    combos: Combos = WORLD_COMBOS,
) -> np.ndarray:
    """(n,) non-empty mention masks over the allowed attributes: each named with its probability; some name all."""
    allowed_bits = np.array([a in allowed for a in combos.attributes])
    bits = (rng.random((n, len(combos.attributes))) < np.asarray(mention)) & allowed_bits  # (n, A)
    masks = (bits * (1 << np.arange(len(combos.attributes)))).sum(1)
    fallback = 1 << rng.choice(np.flatnonzero(allowed_bits), n)  # one allowed attribute
    masks = np.where(masks == 0, fallback, masks)
    return np.where(rng.random(n) < full_prob, combos.mask_of(allowed), masks)


def value_slots(combos: Combos) -> tuple[np.ndarray, np.ndarray]:
    """(sum V,) the attribute of every value and (sum V,) its index within its attribute."""
    return np.repeat(np.arange(len(combos.n_values)), combos.n_values), np.concatenate(
        [np.arange(n) for n in combos.n_values]
    )


def uniform_change(combos: Combos) -> np.ndarray:
    """(A, V, V) P(new | old value) when any other value of the attribute is as likely (zero diagonal)."""
    n_values = combos.n_values
    valid = np.arange(n_values.max()) < n_values[:, None]  # (A, V) which value slots an attribute has
    return (valid[:, :, None] & valid[:, None, :] & ~np.eye(n_values.max(), dtype=bool)) / np.maximum(n_values - 1, 1)[
        :, None, None
    ]


@torch.no_grad()
def value_confusion(model: open_clip.CLIP, tokens: CaptionTokens, temperature: float) -> np.ndarray:
    """(A, V, V) P(new | old value) of each attribute, from how alike the text tower finds their one-word captions."""
    combos = tokens.combos
    attribute_of_value, value_index = value_slots(combos)
    n_values = combos.n_values
    attrs = np.zeros((len(value_index), len(n_values)), dtype=np.int64)
    attrs[np.arange(len(value_index)), attribute_of_value] = value_index  # one object per value, other attributes 0
    masks = 1 << attribute_of_value  # each caption names only that attribute ("a circle.", "a red object.")
    device = model.logit_scale.device
    features = model.encode_text(tokens(combos.ids(attrs), masks).to(device), normalize=True)  # (sum V, D)
    sim = (features @ features.T).cpu().numpy()  # (sum V, sum V)
    out = np.zeros((len(n_values), n_values.max(), n_values.max()))
    for a, n in enumerate(n_values):
        rows = attribute_of_value == a
        logits = sim[np.ix_(rows, rows)] / temperature  # (n, n)
        np.fill_diagonal(logits, -np.inf)
        weights = np.exp(logits - logits.max(1, keepdims=True))
        out[a, :n, :n] = weights / weights.sum(1, keepdims=True)
    return out


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (no gains, biases, embeddings or logit scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class ListenerRecipe:
    """How a listener CLIP is trained on the world through its perception (every field is part of its cache key).

    The loss is a multi-positive CLIP loss over captions of random attribute subsets, with hard-negative groups.
    """

    # optimizer steps (on the broad pretraining split, 600 left shape words half learnt: 0.33 of a 0.74 ceiling)
    steps: int = 1000
    batch_size: int = 128  # images per step
    lr: float = 3e-3  # AdamW peak learning rate
    weight_decay: float = 0.05  # AdamW weight decay on matrices (no gains, biases, embeddings or logit scale)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    eps: float = 1e-6  # AdamW epsilon
    schedule: Schedule = field(default_factory=lambda: Schedule(warmup=20, overlap=True))  # warmup, cosine decay to 0
    max_logit_scale: float = 100.0  # the CLIP temperature exp(logit_scale) is clamped to at most this
    # scenes of the world's pretraining split (every combination, the broad style) rendered for training
    pool_size: int = 16384
    group_size: int = 8  # hard negatives: groups of a scene and variants that change one attribute
    group_fraction: float = 0.5  # share of each batch made of such groups
    mention: tuple[float, ...] = (0.3, 0.7, 0.5, 0.5, 0.5)  # P(a caption names the attribute), ATTRIBUTES order
    full_prob: float = 0.2  # share of captions that name every known attribute
    prefix_probs: tuple[float, ...] = (0.8, 0.1, 0.1)  # P(each caption prefix: "", "there is", "a picture of")
    # also caption each image once per known attribute ("a circle.", "a red object."), a loss each
    attribute_views: bool = True
    focus: float = 0.9  # share of hard-negative variants aimed at what the listener confuses most (the rest uniform)
    confusion_temperature: float = 0.1  # sharpness of that aim: exp(cosine of one-word captions / temperature)
    # weight of the newest step in each attribute view's running excess loss (which attribute to aim at)
    view_loss_rate: float = 0.1
    # share of each batch seen in grayscale with colour-free captions (without it shape lost to colour)
    gray_share: float = 0.6

    def key_fields(self) -> dict[str, Any]:
        """The settings a CLIP's cache key reads (`optim.key_fields`)."""
        warmup = self.schedule.warmup
        return key_fields(self, {"warmup": warmup}, Schedule(warmup=warmup, overlap=True))


def train_listener(
    model_name: str,
    perception: Perception | str | Mapping[str, Any],
    world: WorldConfig,
    recipe: ListenerRecipe = ListenerRecipe(),
    seed: int = 0,
    exclude: Sequence[str] = (),
    *,
    data: ImageSet | None = None,
    init: str | None = None,
    progress: bool = True,
    position: int | None = None,
    device: torch.device | str = "cpu",
) -> open_clip.CLIP:
    """Train a listener CLIP contrastively through its perception (multi-positive CLIP loss), on `device` (the model
    comes back there; batches are drawn on the host, so a seed draws the same batches on any device).

    data: what it learns from: None, the embedded world's pretraining scenes (recipe.pool_size, rendered); images with
    scenes (CLEVR), the same recipe in their vocabulary; images with reference captions only (COCO), the CLIP loss on
    those captions (no attribute views, hard negatives or grayscale share: they need scenes). init: an open_clip
    pretrained tag or checkpoint file to fine-tune (None: random initialisation).
    exclude: attributes whose words never appear in the training captions (the listener's knowledge; data with scenes).
    With attribute views, hard-negative variants change the attribute whose view has the largest running excess
    loss (over a perfect listener's) and the new value in proportion to exp(cosine(old value's caption, new
    value's caption) / confusion_temperature), so two values the text tower has merged are contrasted until they
    separate. Grayscale images' own captions leave colour out, and no colour caption counts as true of them.
    Torch's global RNG is left as it was (initialisation draws from a forked one seeded with `seed`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train_listener(
            model_name, make_perception(perception), world, recipe, seed, exclude, data, init, progress, position,
            torch.device(device),
        )  # fmt: skip


def _train_listener(
    model_name: str,
    perception: Perception,
    world: WorldConfig,
    recipe: ListenerRecipe,
    seed: int,
    exclude: Sequence[str],
    data: ImageSet | None,
    init: str | None,
    progress: bool,
    position: int | None,
    device: torch.device,
) -> open_clip.CLIP:
    training = ListenerTraining(model_name, perception, world, recipe, seed, exclude, data, init, device)
    label = f"CLIP seed {seed} ({perception.name or type(perception).__name__})"
    steps = StepProgress(recipe.steps, label, progress, position)
    for _ in steps:
        loss, logit_scale = training.step()
        steps.show(loss=loss, scale=logit_scale)
    training.model.eval()
    return training.model


class ListenerTraining:
    """The recipe's training state -- a CLIP, its batches, AdamW with warmup and cosine decay -- and one optimizer step.

    `tokens` and `optimizer` build the caption table and the optimizer (the bench's naive twin overrides them).
    """

    def __init__(
        self,
        model_name: str,
        perception: Perception,
        world: WorldConfig,
        recipe: ListenerRecipe,
        seed: int = 0,
        exclude: Sequence[str] = (),
        data: ImageSet | None = None,
        init: str | None = None,
        device: torch.device = torch.device("cpu"),
    ) -> None:
        import open_clip  # imported on use: it takes seconds

        r = self.recipe = recipe
        register_model_configs()
        self.rng = np.random.default_rng(seed)
        self.model = open_clip.create_model(
            model_name, pretrained=init
        )  # random init unless init; sets model.visual.preprocess_cfg
        # convolution weights channels-last, as the images
        self.model.to(device, memory_format=torch.channels_last).train()
        size, mean, std = clip_preprocess(self.model)
        mean, std = mean.to(device), std.to(device)  # model_input moves the images to mean's device
        tokenizer = open_clip.get_tokenizer(model_name)
        if data is not None and data.scenes is None:
            if exclude:
                raise ValueError(
                    f"knowledge.exclude={list(exclude)} needs training data with scenes; {data.name} has captions only"
                )
            self.batches: _SceneBatches | _CaptionBatches = _CaptionBatches(
                data, tokenizer, perception, r.batch_size, size, mean, std
            )
        else:
            if data is None:
                pool = ScenePool.build(world, r.pool_size)
            else:
                pool = ScenePool.of(data.images, data.attrs, Combos(data.scenes.vocab))
            self.batches = _SceneBatches(
                pool, self.tokens(tokenizer, pool.combos), perception, r, exclude, size, mean, std
            )
        self.opt = self.optimizer(_param_groups(self.model, r.weight_decay))
        self.sched = lr_scheduler(self.opt, r.schedule, r.steps)
        self.max_logit_scale = math.log(r.max_logit_scale)

    def tokens(self, tokenizer: Callable[[list[str]], torch.Tensor], combos: Combos) -> CaptionTokens:
        """The canonical captions' token table (each distinct text encoded once a batch)."""
        return CaptionTokens(tokenizer, combos)

    def optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        r = self.recipe
        return adamw(groups, lr=r.lr, betas=tuple(r.betas), eps=r.eps)

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a fresh batch; returns (the loss, the logit scale)."""
        loss, logit_scale = self.batches.loss(self.model, self.rng)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, self.max_logit_scale)
        return loss, logit_scale


class _SceneBatches:
    """The recipe's loss on images with scenes: captions of random attribute subsets, attribute views, hard negatives,
    a grayscale share."""

    def __init__(
        self,
        pool: ScenePool,
        tokens: CaptionTokens,
        perception: Perception,
        recipe: ListenerRecipe,
        exclude: Sequence[str],
        size: tuple[int, int],
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        attributes = pool.combos.attributes
        self.allowed = [a for a in attributes if a not in exclude]
        if not self.allowed or len(self.allowed) + len(set(exclude)) != len(attributes):
            raise ValueError(
                f"knowledge.exclude={list(exclude)} must name some but not all of: {', '.join(attributes)}"
            )
        self.pool, self.tokens, self.perception, self.r = pool, tokens, perception, recipe
        self.size, self.mean, self.std = size, mean, std
        self.prefix_p = np.asarray(recipe.prefix_probs, dtype=np.float64) / sum(recipe.prefix_probs)
        self.grayscale = make_perception("grayscale")
        self.known = np.array([a in self.allowed for a in attributes])
        self.view_loss = self.known.astype(
            np.float64
        )  # (A,) running excess loss of each attribute's view; equal at the start
        self.uniform = uniform_change(pool.combos)

    def loss(self, model: open_clip.CLIP, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        r, pool, combos, known = self.r, self.pool, self.pool.combos, self.known
        attributes, color_bit = combos.attributes, combos.mask_of(["color"])
        attribute_p = (1 - r.focus) * known / known.sum() + r.focus * self.view_loss / self.view_loss.sum()  # (A,)
        if r.attribute_views:
            value_p = (1 - r.focus) * self.uniform + r.focus * value_confusion(
                model, self.tokens, r.confusion_temperature
            )
            idx = pool.batch(r.batch_size, r.group_size, r.group_fraction, rng, attribute_p, value_p)  # (B,)
        else:
            idx = pool.batch(r.batch_size, r.group_size, r.group_fraction, rng)
        attrs = pool.attrs[idx]  # (B, A)
        gray = rng.random(r.batch_size) < r.gray_share  # (B,) images seen in grayscale; their own captions drop colour
        masks = sample_masks(r.batch_size, r.mention, r.full_prob, rng, self.allowed, combos)
        colorless = np.where(
            masks & ~color_bit, masks & ~color_bit, combos.mask_of([a for a in self.allowed if a != "color"])
        )
        views = [np.where(gray, colorless, masks)]  # (B,) mention masks per view
        views += [np.full(r.batch_size, combos.mask_of([a])) for a in self.allowed] if r.attribute_views else []
        prefixes = rng.choice(len(self.prefix_p), size=(len(views), r.batch_size), p=self.prefix_p)
        keys = np.concatenate([self.tokens.keys(combos.ids(attrs), m, p) for m, p in zip(views, prefixes)])  # (V*B,)
        unique, inverse = np.unique(self.tokens.texts(keys), return_inverse=True)  # each distinct text encoded once
        pixels, device = pool.images[idx], self.mean.device  # (B, H, W, 3)
        images = perceive(pixels, self.perception, self.size, self.mean, self.std)  # (B, 3, H, W)
        if gray.any():
            images[torch.from_numpy(gray).to(device)] = perceive(
                pixels[gray], self.grayscale, self.size, self.mean, self.std
            )
        image_features, text_features, logit_scale = model(images, self.tokens.token_rows(unique).to(device))
        text_features = text_features[torch.from_numpy(inverse).to(device)]  # (V*B, D)
        same = torch.from_numpy(attrs[:, None, :] == attrs[None, :, :]).to(device)  # (B, B, A)
        unseen = torch.from_numpy(gray).to(device)[None, :]  # (1, B) a gray image shows no colour
        losses, excess = [], []
        for view_masks, feats in zip(views, text_features.split(r.batch_size)):
            bits = torch.from_numpy((view_masks[:, None] >> np.arange(len(attributes))) & 1).bool().to(device)  # (B, A)
            match = (same | ~bits[:, None, :]).all(-1) & ~(
                bits[:, None, attributes.index("color")] & unseen
            )  # (B, B) caption i true of image j
            losses.append(multi_positive_clip_loss(image_features, feats, logit_scale, match))
            with torch.no_grad():
                floor = multi_positive_clip_floor(match)
            excess.append(float(losses[-1].detach() - floor))
        if r.attribute_views:
            self.view_loss[known] = (1 - r.view_loss_rate) * self.view_loss[known] + r.view_loss_rate * np.maximum(
                excess[1:], 1e-3
            )
        return torch.stack(losses).mean(), logit_scale


class _CaptionBatches:
    """The CLIP loss on images with reference captions only: each image with one of its captions, the others
    negatives."""

    def __init__(
        self,
        data: ImageSet,
        tokenizer: Callable[[list[str]], torch.Tensor],
        perception: Perception,
        batch_size: int,
        size: tuple[int, int],
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        self.captions = data.captions  # (N,) lists of reference captions
        self.data, self.tokenizer, self.perception, self.batch_size = data, tokenizer, perception, batch_size
        self.size, self.mean, self.std = size, mean, std

    def loss(self, model: open_clip.CLIP, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.sort(
            rng.choice(len(self.data), size=min(self.batch_size, len(self.data)), replace=False)
        )  # (B,) distinct images
        texts = [self.captions[i][rng.integers(len(self.captions[i]))] for i in idx]
        images = perceive(self.data.images[idx], self.perception, self.size, self.mean, self.std)  # (B, 3, H, W)
        image_features, text_features, logit_scale = model(images, self.tokenizer(texts).to(self.mean.device))
        match = torch.tensor(
            [[text in self.captions[j] for j in idx] for text in texts], device=self.mean.device
        )  # (B, B) caption i is one of image j's
        return multi_positive_clip_loss(image_features, text_features, logit_scale, match), logit_scale


def save_listener(model: open_clip.CLIP, path: str | Path) -> Path:
    """Save as safetensors that create_model_and_transforms(name, pretrained=path) loads (path ending .safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}, str(path))
    return path
