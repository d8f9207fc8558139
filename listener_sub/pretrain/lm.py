"""LM recipe: a word-level tokenizer and a small GPT-2 trained on description-then-caption text of the world.

Each training sequence is [description of the scene: exactly M tokens] [caption] [EOS], with the loss
on the caption and EOS only, so the LM learns to read its M-token context -- the positions the
speaker's soft prefix takes later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from listener_sub.data import ImageSet
from listener_sub.errors import UserError
from listener_sub.files import atomic_path
from listener_sub.metrics import caption_metrics
from listener_sub.models.lm import DESC_FILL, DESC_SEP, LMConfig, describe, without_transformers_bars
from listener_sub.optim import Schedule, adamw, key_fields, lr_scheduler
from listener_sub.pretrain.progress import StepProgress
from listener_sub.world import (
    ATTRIBUTES,
    PRETRAIN_SPLIT,
    WORLD_VOCAB,
    CaptionConfig,
    Vocabulary,
    WorldConfig,
    caption_scenes,
    parse,
    sample_scenes,
)
from listener_sub.world.grammar import END, POSITION_PHRASES, PREFIXES, RELATIONS

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerFast

UNK, PAD, EOS = "<unk>", "<pad>", "<|endoftext|>"
SPACE = "\u2581"  # Metaspace's word marker; alone (from a text that is just ".") it is no word
IGNORE = -100  # label of positions without loss
MAX_NEW_TOKENS = 24  # longest continuation generated in evaluation (the longest caption takes 19 with EOS)


@dataclass
class LMRecipe:
    """How the embedded default's GPT-2 is trained (every field is part of the LM's cache key)."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # sequences per step
    lr: float = 1e-2  # AdamW peak learning rate
    schedule: Schedule = field(default_factory=lambda: Schedule(warmup=50))  # linear warmup, then cosine decay to 0
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping (global L2 norm)
    n_scenes: int = 2000  # scenes of the world's pretraining split in the corpus
    per_scene: int = 5  # captions per scene
    seed: int = 0  # corpus captions, initialisation and batch order

    def key_fields(self) -> dict[str, Any]:
        """The settings the LM's cache key reads (`optim.key_fields`): the warmup as a fraction of the steps."""
        warmup = self.schedule.warmup
        return key_fields(self, {"warmup": warmup / self.steps}, Schedule(warmup=warmup))


# ---------------------------------------------------------------- corpus


def build_corpus(
    world: WorldConfig,
    captions: CaptionConfig,
    n_scenes: int,
    per_scene: int,
    prefix_len: int,
    seed: int,
    data: ImageSet | None = None,
) -> list[tuple[str, str]]:
    """(description, caption) pairs of the first n_scenes images, per_scene captions each.

    data None: scenes of the world's pretraining split (every combination); data with scenes: its scenes, described
    and captioned in its vocabulary; data with reference captions only: up to per_scene of each image's captions
    after a description of filler only (there is no scene to describe, so the LM learns captions without reading its
    context).
    """
    if data is None:
        scenes = sample_scenes(world, PRETRAIN_SPLIT, 0, n_scenes)
    elif data.scenes is not None:
        scenes = data.scenes[:n_scenes]
    else:
        blank = describe([], prefix_len)
        return [(blank, c) for caps in data.captions[:n_scenes] for c in caps[:per_scene]]
    texts = caption_scenes(scenes, captions, per_scene, seed)
    return [(describe(scenes.objects(b), prefix_len), c) for b, caps in enumerate(texts) for c in caps]


def corpus_mention_rates(pairs: list[tuple[str, str]], vocab: Vocabulary = WORLD_VOCAB) -> dict[str, float]:
    """Fraction of the corpus captions that mention each attribute."""
    mentioned = [parse(caption, vocab).mentioned() for _, caption in pairs]
    return {a: sum(a in m for m in mentioned) / max(len(mentioned), 1) for a in ATTRIBUTES}


# ---------------------------------------------------------------- tokenizer


def lexicon(vocab: Vocabulary = WORLD_VOCAB) -> list[str]:
    """Every word of a vocabulary's captions and descriptions; END last, so that joined it ends a 'caption'."""
    phrases = [*PREFIXES, *POSITION_PHRASES.values(), *RELATIONS.values(), "a an", vocab.generic_noun]
    words = {w for p in phrases for w in p.split()} | {w for vs in vocab.values.values() for w in vs}
    return sorted(words | {DESC_SEP, DESC_FILL}) + [END]


def _word_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """Word-level tokenizer: lower-cased, whitespace-collapsed, '.' split off; decodes with single spaces."""
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Lowercase(),
            normalizers.Strip(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Replace(" .", "."),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(prepend_scheme="always"), pre_tokenizers.Split(".", "isolated")]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    return tok


def train_tokenizer(texts: list[str], vocab: Vocabulary = WORLD_VOCAB) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of `texts` plus a vocabulary's lexicon, with EOS, pad and unk tokens."""
    from transformers import PreTrainedTokenizerFast  # imported on use: it takes seconds

    splitter = _word_tokenizer({UNK: 0})
    pieces = set()
    for text in [*texts, " ".join(lexicon(vocab))]:
        pieces.update(p for p, _ in splitter.pre_tokenizer.pre_tokenize_str(splitter.normalizer.normalize_str(text)))
    vocab = {tok: i for i, tok in enumerate([UNK, PAD, EOS, *sorted(pieces - {SPACE})])}
    return PreTrainedTokenizerFast(
        tokenizer_object=_word_tokenizer(vocab), unk_token=UNK, pad_token=PAD, eos_token=EOS, bos_token=EOS
    )


# ---------------------------------------------------------------- model inputs


@dataclass
class LMBatch:
    """Description-then-caption sequences, right-padded."""

    input_ids: torch.Tensor  # (N, T) int64
    attention_mask: torch.Tensor  # (N, T) int64, 0 on padding
    labels: torch.Tensor  # (N, T) int64, IGNORE on the description and padding

    def __getitem__(self, sel) -> LMBatch:
        """The selected rows, without the padding columns they all share."""
        mask = self.attention_mask[sel]
        t = int(mask.sum(1).max())
        return LMBatch(self.input_ids[sel][:, :t], mask[:, :t], self.labels[sel][:, :t])


def encode_pairs(pairs: list[tuple[str, str]], tokenizer: PreTrainedTokenizerFast, prefix_len: int) -> LMBatch:
    """[description (prefix_len tokens)] [caption] [EOS] for each pair, right-padded to the longest."""
    descs = tokenizer([d for d, _ in pairs], add_special_tokens=False)["input_ids"]
    caps = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    bad = next((d for d, ids in zip(pairs, descs) if len(ids) != prefix_len), None)
    if bad is not None:
        raise ValueError(f"description {bad[0]!r} is not {prefix_len} tokens under this tokenizer")
    rows = [d + c + [tokenizer.eos_token_id] for d, c in zip(descs, caps)]
    t = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (t - len(r)) for r in rows])  # (N, T)
    mask = (torch.arange(t) < torch.tensor([len(r) for r in rows])[:, None]).long()  # (N, T)
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :prefix_len] = IGNORE
    return LMBatch(ids, mask, labels)


# ---------------------------------------------------------------- training


def token_nll(model: PreTrainedModel, batch: LMBatch) -> torch.Tensor:
    """(N, T-1) NLL of each next token; 0 where its label is IGNORE."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]  # (N, T-1, V)
    labels = batch.labels[:, 1:]  # (N, T-1)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")


def make_model(cfg: LMConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of cfg's size over the tokenizer's vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        activation_function=cfg.activation,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        prefix_len=cfg.prefix_len,
    )
    return GPT2LMHeadModel(config)


def fit(model: PreTrainedModel, data: LMBatch, recipe: LMRecipe, progress: bool = True) -> None:
    """AdamW on the mean caption-token NLL of random batches of `data` (warmup, cosine decay, clipping)."""
    steps = recipe.steps
    opt = adamw(model.parameters(), lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay)
    sched = lr_scheduler(opt, recipe.schedule, steps)
    rng = np.random.default_rng(recipe.seed)
    model.train()
    bar = StepProgress(steps, "training LM", progress)
    for _ in bar:
        batch = data[torch.from_numpy(rng.integers(0, len(data.input_ids), size=recipe.batch_size))]
        loss = token_nll(model, batch).sum() / (batch.labels[:, 1:] != IGNORE).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        opt.step()
        sched.step()
        bar.show(loss=loss)
    model.eval()


def train_lm(
    cfg: LMConfig,
    world: WorldConfig,
    captions: CaptionConfig,
    out_dir: str | Path,
    recipe: LMRecipe = LMRecipe(),
    progress: bool = True,
    data: ImageSet | None = None,
) -> Path:
    """Train tokenizer and GPT-2 on the description-then-caption corpus (`build_corpus`; data None: the world's);
    save both to out_dir (atomically).

    Torch's global RNG is left as it was (the initialisation draws from a forked one seeded with recipe.seed).
    """
    pairs = build_corpus(world, captions, recipe.n_scenes, recipe.per_scene, cfg.prefix_len, recipe.seed, data)
    vocab = data.scenes.vocab if data is not None and data.scenes is not None else WORLD_VOCAB
    tokenizer = train_tokenizer([t for pair in pairs for t in pair], vocab)
    encoded = encode_pairs(pairs, tokenizer, cfg.prefix_len)
    if encoded.input_ids.shape[1] > cfg.n_positions:
        raise UserError(
            f"the LM's training sequences take {encoded.input_ids.shape[1]} positions; set lm.model.n_positions >= that"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = make_model(cfg, tokenizer)
        fit(model, encoded, recipe, progress)
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp, without_transformers_bars():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def caption_nll(model: PreTrainedModel, batch: LMBatch) -> torch.Tensor:
    """(N,) mean NLL per caption token (EOS included) of each sequence."""
    return token_nll(model, batch).sum(1) / (batch.labels[:, 1:] != IGNORE).sum(1)


@torch.no_grad()
def continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    descriptions: list[str],
    temperature: float | None,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """Caption text the LM continues each description with: greedy (temperature None) or sampled."""
    ids = tokenizer(descriptions, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (B, M)
    sampling = {"do_sample": False}
    if temperature:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )  # (B, M + L)
    return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


def evaluate_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    world: WorldConfig,
    captions: CaptionConfig,
    prefix_len: int,
    n_scenes: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """On val scenes: caption NLL with the right vs another scene's description; quality of greedy and sampled text."""
    scenes = sample_scenes(world, "val", 0, n_scenes)
    descs = [describe(scenes.objects(b), prefix_len) for b in range(n_scenes)]
    caps = [c[0] for c in caption_scenes(scenes, captions, 1, seed)]
    right = encode_pairs(list(zip(descs, caps)), tokenizer, prefix_len)
    wrong = encode_pairs(list(zip(descs[-1:] + descs[:-1], caps)), tokenizer, prefix_len)
    metrics = {"nll/right": caption_nll(model, right).mean().item()}
    metrics["nll/wrong"] = caption_nll(model, wrong).mean().item()
    with torch.random.fork_rng(devices=[]):  # sampling draws from torch's RNG: a forked one, seeded
        torch.manual_seed(seed)
        for prefix, temperature in (("", None), ("sample/", 1.0)):
            metrics |= caption_metrics(
                continuations(model, tokenizer, descs, temperature), scenes, range(n_scenes), None, prefix
            )
    return metrics
