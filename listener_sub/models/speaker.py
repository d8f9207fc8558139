"""Speaker: frozen open_clip vision tower -> trainable adapter -> frozen causal LM through a soft prefix.

Vision features come from `listener_sub.models.vision.VisionTower` (patch tokens and the pooled embedding of an
open_clip tower, read without changing the caller's CLIP); Perceiver adapters read the tokens, MLP adapters the
pooled embedding (`adapter.uses_tokens`). Pixels go through the one model preprocessing
(`listener_sub.images.model_input`): resized to the tower's size and normalised with its mean/std.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from listener_sub.adapters import adapter_class, create_adapter
from listener_sub.adapters.io import ADAPTER, find_adapter, read_adapter, write_adapter
from listener_sub.draws import categorical, uniforms
from listener_sub.errors import DataError
from listener_sub.images import Images
from listener_sub.models.gpt2_fast import FastGPT2
from listener_sub.models.listener import clip_skeleton, register_model_configs
from listener_sub.models.lm import load_lm
from listener_sub.models.precision import autocast
from listener_sub.models.vision import VisionTower


@dataclass
class VisionFeatures:
    """Frozen vision-tower outputs for a batch of images."""

    pooled: torch.Tensor  # (B, d_pooled) CLIP image embedding
    tokens: torch.Tensor  # (B, T, d_tokens) patch tokens

    def __getitem__(self, rows: Any) -> VisionFeatures:
        """The features of some images (an index array, slice or mask)."""
        rows = torch.as_tensor(rows, device=self.pooled.device) if not isinstance(rows, slice) else rows
        return VisionFeatures(self.pooled[rows], self.tokens[rows])

    @staticmethod
    def cat(parts: list[VisionFeatures]) -> VisionFeatures:
        return VisionFeatures(torch.cat([p.pooled for p in parts]), torch.cat([p.tokens for p in parts]))


@dataclass
class Generation:
    """Sampled captions; row b * k + j is sample j of image b."""

    tokens: torch.Tensor  # (B*k, L) int64, right-padded with the pad id after EOS
    lengths: torch.Tensor  # (B*k,) int64 tokens up to and including EOS; max_new_tokens if no EOS
    texts: list[str]  # decoded captions without special tokens
    # (B*k, L) log pi(token) from the KV-cache pass at temperature 1 without top-k/top-p; 0 after EOS
    token_log_probs: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B*k, L) float: 1 for tokens up to and including EOS."""
        return length_mask(self.lengths, self.tokens.shape[1])

    def __getitem__(self, rows: torch.Tensor) -> Generation:
        """The captions of some rows (an index tensor), in that order."""
        rows = rows.to(self.tokens.device)
        texts = [self.texts[i] for i in rows.tolist()]
        return Generation(self.tokens[rows], self.lengths[rows], texts, self.token_log_probs[rows])


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N,) lengths -> (N, width) float mask, 1 on the first lengths[i] positions."""
    return (torch.arange(width, device=lengths.device) < lengths[:, None]).float()


def sample_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next ids (N,) from logits (N, V): argmax if greedy, else a draw from the tempered top-k/top-p softmax, by inverse
    CDF with the (N,) `uniform` numbers (drawn from `generator` when not given)."""
    if greedy:
        return logits.argmax(-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(-1, descending=True)  # (N, V)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before a token already reaches top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    if uniform is None:
        uniform = uniforms(len(logits), 1, generator, logits.device).squeeze(-1)  # (N,)
    return categorical(logits.softmax(-1), uniform)  # (N,)


def decode_with_cache(
    first: torch.Tensor,
    step: Callable[[torch.Tensor, int], torch.Tensor],
    max_new_tokens: int,
    draws: torch.Tensor | None,
    eos_id: int,
    pad_id: int,
    **sampling: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoding loop of every speaker kind: from the (N, V) logits of the first token, draw a token per row
    (`sample_token`; token t of row i with draws[i, t], None: greedy), then `step(token, t)` gives the next (N, V)
    logits (the LM reading the token through its KV cache). Returns tokens (N, L), lengths (N,) up to and including
    EOS, and each token's log-probability at temperature 1 (N, L), 0 after EOS.

    On the CPU decoding stops when every row has ended; on a GPU it runs all max_new_tokens steps (pad after EOS), so
    that no token waits for the host to learn whether all have ended.
    """
    N = len(first)
    finished = torch.zeros(N, dtype=torch.bool, device=first.device)
    lengths = torch.zeros(N, dtype=torch.long, device=first.device)
    stop_early = first.device.type == "cpu"  # finished.all() is free here; on a GPU it synchronises with the host
    tokens, log_probs, logits = [], [], first
    for t in range(max_new_tokens):
        uniform = None if draws is None else draws[:, t]  # (N,)
        token = torch.where(finished, pad_id, sample_token(logits, uniform=uniform, **sampling))  # (N,)
        logp = logits.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)  # (N,)
        tokens.append(token)
        log_probs.append(logp.masked_fill(finished, 0.0))
        lengths += ~finished
        finished |= token == eos_id
        if t == max_new_tokens - 1 or (stop_early and finished.all()):
            break
        logits = step(token, t)
    return torch.stack(tokens, 1), lengths, torch.stack(log_probs, 1)


def check_sampling(k: int, temperature: float, top_k: int, top_p: float, max_new_tokens: int, greedy: bool) -> None:
    """Raise ValueError on sampling settings that make no sense."""
    if k < 1 or max_new_tokens < 1:
        raise ValueError(f"k and max_new_tokens must be >= 1, got k={k}, max_new_tokens={max_new_tokens}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (or greedy=True), got {temperature}")
    if top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need top_k >= 0 (0 = off) and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")


def cache_argument(lm: nn.Module) -> str:
    """The LM's KV-cache argument and output field: `cache` (transformers >= 5.x) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def meta_vision_tower(model: str) -> VisionTower:
    """open_clip model `model`'s image tower on the meta device: its widths (what an adapter reads) from a dry run, no
    weights."""
    with torch.device("meta"):
        return VisionTower(clip_skeleton(model))


class Speaker(nn.Module):
    """Frozen open_clip vision tower -> trainable adapter -> soft prefix (B, M, d_lm) -> frozen causal LM."""

    def __init__(self, vision: nn.Module, lm: nn.Module, tokenizer: Any, adapter: nn.Module) -> None:
        super().__init__()
        self.visual = vision if isinstance(vision, VisionTower) else VisionTower(vision)
        self.lm = lm
        self.tokenizer = tokenizer
        for frozen in (self.visual, self.lm):
            frozen.requires_grad_(False)
            frozen.eval()
        self.adapter = self._checked(adapter)
        if tokenizer.eos_token_id is None:
            raise ValueError("the speaker's tokenizer needs an eos token")
        if len(tokenizer) > self.lm.get_input_embeddings().num_embeddings:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the LM's vocabulary")
        self.cache_arg = cache_argument(lm)
        self.vocab_size = len(
            tokenizer
        )  # the policy ranges over the tokens the tokenizer can decode (an LM may have more rows)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    @classmethod
    def build(
        cls, vision: nn.Module, lm: nn.Module, tokenizer: Any, kind: str = "perceiver", **adapter_cfg: Any
    ) -> Speaker:
        """A speaker with a fresh adapter of `kind` (initialised from torch's global RNG); d_vision and d_lm come from
        the models."""
        tower = vision if isinstance(vision, VisionTower) else VisionTower(vision)
        d_vision = tower.width_for(adapter_class(kind).uses_tokens)
        d_lm = lm.get_input_embeddings().embedding_dim
        return cls(tower, lm, tokenizer, create_adapter(kind, d_vision=d_vision, d_lm=d_lm, **adapter_cfg))

    def _checked(self, adapter: nn.Module) -> nn.Module:
        """The adapter, if its input and output widths fit the vision tower and the LM."""
        d_vision = self.visual.width_for(adapter.uses_tokens)
        d_lm = self.lm.get_input_embeddings().embedding_dim
        if (adapter.config.d_vision, adapter.config.d_lm) != (d_vision, d_lm):
            raise ValueError(
                f"{adapter.kind} adapter maps width {adapter.config.d_vision} -> {adapter.config.d_lm}, "
                f"but the vision features have width {d_vision} and the LM {d_lm}"
            )
        return adapter

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    @property
    def trainable(self) -> nn.Module:
        """What trains (the adapter) and what DistributedDataParallel wraps."""
        return self.adapter

    def reference_policy(self) -> nn.Module:
        """The frozen reference for the KL: a copy of the adapter as it is now (the captioning adapter before RL)."""
        return copy.deepcopy(self.adapter).requires_grad_(False).eval()

    @property
    def n_prefix(self) -> int:
        """M, the soft-prefix length."""
        return self.adapter.config.n_latents

    def train(self, mode: bool = True) -> Speaker:
        """Set the adapter's mode; the frozen vision tower and LM always stay in eval mode."""
        super().train(mode)
        self.visual.eval()
        self.lm.eval()
        return self

    def _autocast(self) -> AbstractContextManager:
        return autocast(self.device)

    @torch.no_grad()
    def encode(self, images: Images) -> VisionFeatures:
        """Frozen vision features of the images (no grad)."""
        with self._autocast():
            pooled, tokens = self.visual(self.visual.pixels(images))  # (B, d_pooled), (B, T, d_tokens)
        return VisionFeatures(pooled.float(), tokens.float())

    def adapt(self, features: VisionFeatures, adapter: nn.Module | None = None) -> torch.Tensor:
        """Soft prefix (B, M, d_lm) from vision features, through `adapter` (default: the speaker's own; also an adapter
        wrapped in DistributedDataParallel, which holds it as `.module`)."""
        adapter = self.adapter if adapter is None else adapter
        uses_tokens = getattr(adapter, "module", adapter).uses_tokens
        with self._autocast():
            return adapter(features.tokens if uses_tokens else features.pooled)

    def prefix(self, images: Images, adapter: nn.Module | None = None) -> torch.Tensor:
        """Soft prefix (B, M, d_lm) of the images; carries grad to the adapter when grad is enabled."""
        return self.adapt(self.encode(images), adapter)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(tokens)  # (N, L, d_lm)

    def log_probs(
        self, prefix: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, k: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log pi of k captions per soft prefix (B, M, d_lm), caption row b * k + j after prefix b:
        (log pi of each token (N, L), float mask (N, L)), N = B * k.

        Tokens up to and including EOS (the first lengths[i]) count; later positions are 0 in both outputs. The LM
        reads each prefix once and its keys and values are repeated for the k captions (gradients reach the prefix
        through them), as sampling reads it; a GPT-2 in plain tensor ops (`FastGPT2`), another LM through its forward
        (with k = 1 one pass over [prefix; tokens]).
        """
        B, M, _ = prefix.shape
        N, L = tokens.shape
        tokens, lengths = tokens.to(self.device), lengths.to(self.device)
        mask = length_mask(lengths, L)  # (N, L)
        with self._autocast():
            fast = self._fast_lm()
            if fast is not None:
                logits, past = fast.read(prefix, k)  # (N, 1, V): the prefix's last position predicts token 0
                if L > 1:
                    logits = torch.cat([logits, fast.extend(tokens[:, :-1], past)], dim=1)  # (N, L, V)
            else:
                attention = torch.cat([mask.new_ones(N, M), mask], dim=1).long()  # (N, M + L), the forward's mask
                if k == 1:
                    token_embeds = self._embed(tokens)  # (N, L, d_lm)
                    embeds = torch.cat([prefix.to(token_embeds.dtype), token_embeds], dim=1)  # (N, M + L, d_lm)
                    logits = self.lm(inputs_embeds=embeds, attention_mask=attention, use_cache=False).logits
                    logits = logits[:, M - 1 : M + L - 1]  # (N, L, V): position M - 1 + t predicts token t
                else:
                    logits, cache = self._read_prefix(prefix, k)  # (N, 1, V): the prefix's last position: token 0
                    if L > 1:
                        rest = self.lm(
                            input_ids=tokens[:, :-1], attention_mask=attention[:, :-1], **{self.cache_arg: cache}
                        )
                        logits = torch.cat([logits, rest.logits], dim=1)  # (N, L, V)
        logp = logits[..., : self.vocab_size].float().log_softmax(-1)  # (N, L, V)
        per_token = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (N, L)
        return per_token * mask, mask

    @torch.no_grad()
    def text_log_probs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of captions (N, L) under the frozen LM alone, after its BOS token (EOS where it has none): no image
        prefix, so the caption's fluency as text, the same for every speaker that shares the LM."""
        bos = self.tokenizer.bos_token_id
        context = self._embed(
            torch.full((len(tokens), 1), self.eos_id if bos is None else int(bos), device=self.device)
        )
        return self.log_probs(context, tokens, lengths)  # (N, L) each

    def encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> token ids (N, L) of caption + EOS, right-padded with the pad id, and lengths (N,)."""
        rows = [ids + [self.eos_id] for ids in self.tokenizer(list(captions), add_special_tokens=False)["input_ids"]]
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
        tokens = torch.full((len(rows), int(lengths.max())), self.pad_id, dtype=torch.long)  # (N, L)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
        return tokens.to(self.device), lengths.to(self.device)

    def caption_loss(self, images: Images | VisionFeatures, captions: list[str]) -> torch.Tensor:
        """Token-mean teacher-forced cross-entropy of caption + EOS given the image's prefix (no loss on prefix/pad);
        the images may come as their vision features (`encode`)."""
        tokens, lengths = self.encode_captions(captions)
        features = images if isinstance(images, VisionFeatures) else self.encode(images)
        prefix = self.adapt(features)  # (B, M, d_lm)
        if prefix.shape[0] != tokens.shape[0]:
            raise ValueError(f"{prefix.shape[0]} images but {tokens.shape[0]} captions")
        per_token, mask = self.log_probs(prefix, tokens, lengths)
        return -per_token.sum() / mask.sum()

    def _fast_lm(self) -> FastGPT2 | None:
        """The LM in plain tensor ops where `FastGPT2` computes it exactly (asked at each use: a hook may be added
        any time), else None."""
        return FastGPT2(self.lm, self.vocab_size) if FastGPT2.fits(self.lm) else None

    def _read_prefix(self, prefix: torch.Tensor, k: int) -> tuple[torch.Tensor, Any]:
        """The LM reads each soft prefix (B, M, d_lm) once (inside the caller's autocast): the logits of its last
        position (N, 1, V'), N = B * k, and its KV cache, both repeated for k captions (row b * k + j is prefix b)."""
        B, M, _ = prefix.shape
        embeds = prefix.to(self.lm.get_input_embeddings().weight.dtype)  # (B, M, d_lm)
        attention = torch.ones(B, M, dtype=torch.long, device=self.device)  # every position read
        out = self.lm(inputs_embeds=embeds, attention_mask=attention, use_cache=True, logits_to_keep=1)
        cache = getattr(out, self.cache_arg)
        cache.batch_repeat_interleave(k)  # (N, heads, M, d_head) per layer
        return out.logits.repeat_interleave(k, 0), cache

    @torch.no_grad()
    def _sample(
        self, prefix: torch.Tensor, k: int, max_new_tokens: int, draws: torch.Tensor | None, **sampling: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """KV-cached decoding of k captions per soft prefix (B, M, d_lm), row b * k + j (`decode_with_cache`).

        The LM reads each prefix once: its keys and values are repeated for the k captions before the first token. A
        GPT-2 decodes in plain tensor ops into a cache of the final length (`FastGPT2.decoder`), any other LM through
        its own forward.
        """
        B, M, _ = prefix.shape
        with self._autocast():
            fast = self._fast_lm()
            if fast is not None:
                first, past = fast.read(prefix, k)  # (N, 1, V), keys and values of B*k rows
                step = fast.decoder(past, max_new_tokens)
            else:
                first, cache = self._read_prefix(prefix, k)  # (N, 1, V'), KV of B*k rows
                attention = torch.ones(B * k, M + max_new_tokens, dtype=torch.long, device=self.device)  # all read

                def step(token: torch.Tensor, t: int) -> torch.Tensor:
                    mask = attention[:, : M + t + 1]  # (N, M + t + 1)
                    kv = {self.cache_arg: cache}
                    out = self.lm(input_ids=token[:, None], attention_mask=mask, use_cache=True, **kv)
                    return out.logits[:, -1, : self.vocab_size].float()  # (N, V)

            first = first[:, -1, : self.vocab_size].float()  # (N, V)
            return decode_with_cache(first, step, max_new_tokens, draws, self.eos_id, self.pad_id, **sampling)

    @torch.no_grad()
    def generate(self, images: Images, k: int = 1, **settings: Any) -> Generation:
        """k captions per image (row b * k + j): `sample` from the images' soft prefix, with its settings (temperature,
        top_k, top_p, max_new_tokens, greedy, generator).

        For a gradient, recompute the prefix: `speaker.log_probs(speaker.prefix(images), gen.tokens, gen.lengths, k)`.
        """
        return self.sample(self.prefix(images), k, **settings)

    @torch.no_grad()
    def sample(
        self,
        prefix: torch.Tensor,
        k: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        draws: torch.Tensor | None = None,
    ) -> Generation:
        """k captions per soft prefix (B, M, d_lm) (row b * k + j), decoded with a KV cache at `temperature` after
        top-k / top-p filtering (0 / 1: off), or greedy. Token t of row i is drawn by inverse CDF with draws[i, t]
        ((B*k, max_new_tokens) uniform numbers; drawn from `generator`, on the speaker's device, when not given)."""
        check_sampling(k, temperature, top_k, top_p, max_new_tokens, greedy)
        prefix = prefix.detach()  # (B, M, d_lm)
        if draws is None and not greedy:
            draws = uniforms(len(prefix) * k, max_new_tokens, generator, self.device)  # (B*k, max_new_tokens)
        tokens, lengths, log_probs = self._sample(
            prefix, k, max_new_tokens, None if greedy else draws,
            temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
        )  # fmt: skip
        texts = self.decode(tokens, lengths)
        return Generation(tokens=tokens, lengths=lengths, texts=texts, token_log_probs=log_probs)

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Token rows (N, L) cut at their lengths -> text without special tokens."""
        rows = [row[:n].tolist() for row, n in zip(tokens.cpu(), lengths.tolist())]
        return [text.strip() for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def save_adapter(self, path: str | Path) -> None:
        """Save only the adapter: safetensors at `path`, its kind and config as JSON beside it."""
        write_adapter(self.adapter, path)

    def save_trainable(self, folder: Path) -> None:
        """The trainable part into a checkpoint folder: the adapter's file (`ADAPTER`) and its JSON."""
        write_adapter(self.adapter, folder / ADAPTER)

    def load_trainable(self, folder: Path) -> None:
        """The trainable part of a checkpoint folder, loaded into this speaker's adapter in place (an optimizer keeps
        its parameters)."""
        self.adapter.load_state_dict(read_adapter(folder / ADAPTER).state_dict())

    def load_adapter(self, path: str | Path) -> nn.Module:
        """Replace the adapter by the one saved at `path` -- an adapter file, a checkpoint dir or a train run (its
        latest checkpoint; `find_adapter`) -- and return it. DataError when it does not fit this speaker's vision tower
        and LM.

            speaker.load_adapter("outputs/train/2026-12-03_10-00-00")  # the run's trained adapter
        """
        path = find_adapter(path)
        try:
            adapter = self._checked(read_adapter(path))
        except ValueError as error:
            raise DataError(
                f"adapter {path} does not fit this speaker: {error}; "
                "pass an adapter trained for this vision model and LM"
            ) from None
        self.adapter = adapter.to(self.device).train(self.training)
        return self.adapter


def create_speaker(
    vision_model: str,
    vision_pretrained: str | None,
    lm: str,
    adapter: str = "perceiver",
    adapter_checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    **adapter_cfg: Any,
) -> Speaker:
    """A speaker: an open_clip model's image tower (name + pretrained tag or file), an HF causal LM (name or
    save_pretrained directory) and an adapter of kind `adapter` ("perceiver" | "mlp", its config fields as
    `adapter_cfg`) -- fresh, initialised from `seed` on a forked RNG (the global one is left as it was), or the one
    saved at `adapter_checkpoint` (an adapter file, a checkpoint dir or a train run).

        speaker = create_speaker("ViT-B-32", "openai", "gpt2", "perceiver", "runs/colorblind", device="cuda")
        captions = speaker.generate(images, greedy=True).texts  # images: (B, H, W, 3) uint8
    """
    import open_clip  # imported on use: it takes seconds

    register_model_configs()
    clip, _, _ = open_clip.create_model_and_transforms(vision_model, pretrained=vision_pretrained)
    model, tokenizer = load_lm(lm, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        speaker = Speaker.build(clip, model, tokenizer, adapter, **adapter_cfg)
    if adapter_checkpoint is not None:
        speaker.load_adapter(adapter_checkpoint)
    return speaker.to(device)
