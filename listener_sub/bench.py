"""Throughput benchmarks: each measures an optimized path against its naive counterpart, in one process.

- Rendering: batched scenes against one scene per call.
- The RL step: `Trainer.train_step` against `NaiveStep`, the same step without its optimizations, on the same boards
  from the same starting weights (the adapter speaker's, or a VLM speaker's: preset=vlm, or speaker=vlm): games
  (sampled captions judged) per second, seconds per phase, the step's FLOPs against this machine's matmul peak
  measured in the same run, peak memory.
- The listener CLIP's pretraining step: `ListenerTraining.step` against `NaiveListenerTraining.step` (every caption
  key encoded, identical texts or not; AdamW's per-parameter loop), from the same initialisation and batches.
- The envs: the Gymnasium vector env (num_envs boards a step through the game core) against the PettingZoo AEC env
  playing the same boards one at a time, its listener agents the game's listener models: boards a second.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from listener_sub.game import Boards, Game, choice_probs, create_game
from listener_sub.models.listener import Listener
from listener_sub.models.speaker import Speaker, sample_token
from listener_sub.models.vlm import VLMPrompt, VLMSpeaker
from listener_sub.perception import make_perception
from listener_sub.pretrain.listeners import CaptionTokens, ListenerRecipe, ListenerTraining
from listener_sub.rl import Phases, Trainer
from listener_sub.world import CaptionConfig, WorldConfig, caption_scenes, render, sample_scenes


@contextmanager
def one_core() -> Iterator[int]:
    """Pin this process to a single CPU for the duration (where the OS allows it)."""
    if not hasattr(os, "sched_getaffinity"):
        yield os.cpu_count() or 1
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield 1
    finally:
        os.sched_setaffinity(0, before)


def best_rate(fn: Callable[[], object], items: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def bench_render(world: WorldConfig, n_images: int, repeats: int) -> dict[str, float]:
    """Images per second on one core: batched rendering vs one scene per call."""
    scenes = sample_scenes(world, "train", 0, n_images)
    naive_n = max(n_images // 8, 1)
    with one_core():
        batched = best_rate(lambda: render(scenes, world.image_size), n_images, repeats)
        naive = best_rate(
            lambda: [render(scenes[i : i + 1], world.image_size) for i in range(naive_n)], naive_n, repeats
        )
    return {"render/images_per_s": batched, "render/naive_images_per_s": naive, "render/speedup": batched / naive}


# ---------------------------------------------------------------- the RL step, naive


@torch.no_grad()
def naive_listen(listeners: Mapping[str, Listener], captions: Sequence[str], boards: Boards) -> dict[str, torch.Tensor]:
    """P(image | caption) as `game.listen` gives it, without its optimizations: each board is scored on its own, its
    images encoded anew by every listener (no feature cache), its caption read alone (no memo, no deduplication)."""
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in listeners}
    for b, caption in enumerate(captions):
        images = boards.images[b]  # (N, H, W, 3)
        for name, listener in listeners.items():
            board = listener.encode_images(images)[None]  # (1, N, D)
            rows[name].append(choice_probs(listener, listener.read([caption]), board))
    return {name: torch.cat(row) for name, row in rows.items()}  # (B, N) each


def decode_without_cache(
    next_logits: Callable[[torch.Tensor], torch.Tensor],
    speaker: Speaker | VLMSpeaker,
    n: int,
    temperature: float,
    draws: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive decoding loop: `next_logits(tokens so far (N, t))` reads the whole sequence again for every token and
    gives the next (N, V) logits; token t of row i drawn with draws[i, t]. Returns tokens (N, L), pad after EOS, and
    lengths (N,) up to and including EOS."""
    tokens = torch.zeros(n, 0, dtype=torch.long, device=speaker.device)  # (N, t)
    finished = torch.zeros(n, dtype=torch.bool, device=speaker.device)
    lengths = torch.zeros(n, dtype=torch.long, device=speaker.device)
    for t in range(draws.shape[1]):
        logits = next_logits(tokens)  # (N, V)
        token = torch.where(finished, speaker.pad_id, sample_token(logits, temperature, uniform=draws[:, t]))  # (N,)
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        lengths += ~finished
        finished |= token == speaker.eos_id
        if finished.all():
            break
    return tokens, lengths


@torch.no_grad()
def naive_sample(
    speaker: Speaker, prefix: torch.Tensor, k: int, temperature: float, draws: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling without a KV cache: every new token re-reads the prefix (B, M, d_lm) and all caption tokens so far
    (`decode_without_cache`; draws (B*k, max_new_tokens))."""
    prefix = prefix.repeat_interleave(k, dim=0)  # (N, M, d_lm)

    def next_logits(tokens: torch.Tensor) -> torch.Tensor:
        embeds = torch.cat([prefix, speaker.lm.get_input_embeddings()(tokens)], dim=1)  # (N, M + t, d_lm)
        return speaker.lm(inputs_embeds=embeds, use_cache=False).logits[:, -1, : speaker.vocab_size].float()

    return decode_without_cache(next_logits, speaker, len(prefix), temperature, draws)


@torch.no_grad()
def naive_vlm_sample(
    speaker: VLMSpeaker, prompt: VLMPrompt, k: int, temperature: float, draws: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A VLM's sampling without its optimizations: the prompt and image read anew for each of the k captions and for
    every new token (no KV cache), with all caption tokens so far (`decode_without_cache`)."""
    inputs = prompt.inputs.repeat(k)  # (N, P) prompts, each image k times

    def next_logits(tokens: torch.Tensor) -> torch.Tensor:
        ids = torch.cat([inputs.input_ids, tokens], 1)  # (N, P + t)
        mask = torch.cat([inputs.attention_mask, torch.ones_like(tokens)], 1)
        return speaker.policy_logits(speaker.model(input_ids=ids, attention_mask=mask, **inputs.pixels).logits[:, -1])

    return decode_without_cache(next_logits, speaker, len(inputs), temperature, draws)


class NaiveStep:
    """The trainer's RL step without its optimizations -- the bench's baseline, sharing the trainer's state (weights,
    optimizer, baseline, random streams): the vision tower runs twice (to sample, then for the log-probs), decoding
    reads the whole sequence for every token (`naive_sample`; a VLM speaker: `naive_vlm_sample`), listeners encode
    every board and caption anew (`naive_listen`). The objective and the update are the trainer's own."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def __call__(self) -> dict[str, float]:
        t = self.trainer
        cfg, speaker, phase = t.cfg, t.speaker, t.phases
        with phase("boards"):
            boards, draws = t.deal()
            images = boards.target_images  # (B, H, W, 3)
        with phase("vision"):
            sampling_features = speaker.encode(images)
        with phase("sampling"):
            sample = naive_vlm_sample if isinstance(speaker, VLMSpeaker) else naive_sample
            tokens, lengths = sample(
                speaker, speaker.adapt(sampling_features), cfg.k, cfg.temperature, draws[:, : cfg.max_new_tokens]
            )
            texts = speaker.decode(tokens, lengths)
        with phase("listeners"):
            repeated = boards.repeat(cfg.k)
            probs = naive_listen(t.game.listeners, texts, repeated)
            outcome = t.game.judge(probs, t.game.choose(probs, draws=draws[:, cfg.max_new_tokens :]), repeated)
        with phase("vision"):
            features = speaker.encode(images)  # again, for the log-probs
        with phase("teacher-forced pass"):
            logp, mask = speaker.log_probs(speaker.adapt(features).repeat_interleave(cfg.k, 0), tokens, lengths)
        with phase("reference pass"), torch.no_grad():
            ref_logp, _ = speaker.log_probs(
                speaker.adapt(features, t.reference).repeat_interleave(cfg.k, 0), tokens, lengths
            )
        objective = t.objective(outcome.reward, logp, ref_logp)
        grad_norm, lr = t.update(objective.loss)
        with phase("bookkeeping"):
            metrics = t.step_metrics(objective, outcome, mask, grad_norm, lr, texts, repeated)
        t.dual_step(metrics)
        return metrics


# ---------------------------------------------------------------- measuring


def matmul_peak(device: torch.device, repeats: int = 5) -> tuple[float, str]:
    """This machine's matmul peak in FLOP/s, measured: the fastest of `repeats` (size x size) products (2 size^3 FLOPs
    each), in bf16 on CUDA (size 8192: a GPU needs large products to reach its peak) and fp32 on the CPU (size 2048);
    and the dtype."""
    cuda = device.type == "cuda"
    dtype, size = (torch.bfloat16, 8192) if cuda else (torch.float32, 2048)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best, str(dtype).removeprefix("torch.")


def attention_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """FLOPs of scaled dot-product attention of query (B, Hq, Sq, D) over key (B, Hkv, Sk, D) and value (B, Hkv, Sk,
    Dv), the key/value heads shared by groups of query heads when Hkv < Hq (grouped-query attention): the scores
    (Sq x D x Sk) and their product with the values (Sq x Sk x Dv) for each of the B * Hq heads."""
    b, heads, s_q, d = query
    s_k, d_v = key[2], value[3]
    return 2 * b * heads * s_q * s_k * (d + d_v)


def _attention_forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return attention_flops(query, key, value)


def _attention_backward(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """The scores recomputed (D), the gradients of the values and of the probabilities (Dv each), of the queries and
    of the keys (D each)."""
    b, heads, s_q, d = query
    s_k, d_v = key[2], value[3]
    return 2 * b * heads * s_q * s_k * (3 * d + 2 * d_v)


def _attention_formulas() -> dict[Any, Callable[..., int]]:
    """torch's fused attention kernels -> GQA-aware FLOP formulas: some torch versions' own refuse Hkv < Hq, and none
    counts the CPU's flash kernel."""
    aten = torch.ops.aten
    kernels = ("efficient_attention", "flash_attention", "cudnn_attention", "flash_attention_for_cpu")
    forward = [getattr(aten, f"_scaled_dot_product_{k}", None) for k in kernels]
    backward = [getattr(aten, f"_scaled_dot_product_{k}_backward", None) for k in kernels]
    return {op: _attention_forward for op in forward if op is not None} | {
        op: _attention_backward for op in backward if op is not None
    }


def step_flops(step: Callable[[], object]) -> float:
    """FLOPs of one call of `step`: matmuls and convolutions as torch's flop counter counts them, fused attention as
    `attention_flops` (grouped-query attention included)."""
    with FlopCounterMode(display=False, custom_mapping=_attention_formulas()) as counter:
        step()
    return float(counter.get_total_flops())


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's peak, or the process's peak resident set on the CPU (GB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def bench_rl(trainer: Trainer, steps: int, naive_steps: int) -> dict[str, float]:
    """The optimized step (`steps` timed) against the naive one (`naive_steps` timed; 0: not run), each after one
    untimed warm-up and one counted step, from the same checkpoint (weights, optimizer, random streams): the same
    boards, the same start.

    Keys rl/<variant>/...: games_per_s (B*k sampled captions judged per second), s_per_step, s/<phase> (seconds per
    step), gflop_per_step, flop_utilisation (achieved FLOP/s over the matmul peak), peak_memory_gb; rl/speedup (when
    the naive step ran); rl/matmul_peak_gflops/<dtype>. The trainer's run directory receives the starting checkpoint.
    """
    device = trainer.speaker.device
    games = trainer.cfg.boards * trainer.cfg.k
    peak, dtype = matmul_peak(device)
    results: dict[str, float] = {f"rl/matmul_peak_gflops/{dtype}": peak / 1e9, "rl/games_per_step": games}
    start_from = trainer.save()
    variants = (("optimized", trainer.train_step, steps), ("naive", NaiveStep(trainer), naive_steps))
    for name, step, n in (variant for variant in variants if variant[2] > 0):
        trainer.load(start_from)
        trainer.phases = Phases(timed=False)
        step()  # warm-up
        flops = step_flops(step)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.phases = Phases()
        for _ in range(n):
            step()
        elapsed = sum(trainer.phases.seconds.values())
        results |= {
            f"rl/{name}/games_per_s": n * games / elapsed,
            f"rl/{name}/s_per_step": elapsed / n,
            **{f"rl/{name}/s/{phase}": s / n for phase, s in trainer.phases.seconds.items()},
            f"rl/{name}/gflop_per_step": flops / 1e9,
            f"rl/{name}/flop_utilisation": flops * n / elapsed / peak,
            f"rl/{name}/peak_memory_gb": peak_memory_gb(device),
        }
    trainer.load(start_from)
    trainer.phases = Phases(timed=False)
    if naive_steps > 0:
        results["rl/speedup"] = results["rl/optimized/games_per_s"] / results["rl/naive/games_per_s"]
    return results


# ---------------------------------------------------------------- the CLIP pretraining step


class KeyedCaptionTokens(CaptionTokens):
    """Captions encoded once per caption key: identical texts of different keys ("a red object." of every red combo)
    are encoded again each."""

    def texts(self, keys: np.ndarray) -> np.ndarray:
        super().texts(keys)  # tokenizes the new texts
        return keys

    def token_rows(self, keys: np.ndarray) -> torch.Tensor:
        return super().token_rows(self.key_text[keys])


class NaiveListenerTraining(ListenerTraining):
    """The listener recipe's step without its optimizations: captions encoded per key, AdamW's per-parameter loop."""

    def tokens(self, tokenizer: Callable[[list[str]], torch.Tensor], combos: Any) -> CaptionTokens:
        return KeyedCaptionTokens(tokenizer, combos)

    def optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        r = self.recipe
        return torch.optim.AdamW(groups, lr=r.lr, betas=tuple(r.betas), eps=r.eps, foreach=False)


def bench_clip(
    model_name: str,
    world: WorldConfig,
    recipe: ListenerRecipe,
    steps: int,
    naive_steps: int,
    device: torch.device = torch.device("cpu"),
) -> dict[str, float]:
    """A full-colour listener CLIP's training step on `device`, optimized (`steps` timed) against naive (`naive_steps`
    timed; 0: not run), each from the same initialisation and batch stream, after one warm-up step and one FLOP-counted
    step.

    Keys clip/<variant>/...: images_per_s, s_per_step, gflop_per_step, flop_utilisation; clip/speedup.
    """
    peak, dtype = matmul_peak(device)
    results: dict[str, float] = {
        f"clip/matmul_peak_gflops/{dtype}": peak / 1e9,
        "clip/images_per_step": recipe.batch_size,
    }
    variants = (("optimized", ListenerTraining, steps), ("naive", NaiveListenerTraining, naive_steps))
    for name, kind, n in (variant for variant in variants if variant[2] > 0):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            training = kind(model_name, make_perception("full"), world, recipe, device=device)
        training.step()  # warm-up
        flops = step_flops(training.step)
        timer = Phases()  # synchronises a GPU at its boundaries
        with timer("steps"):
            for _ in range(n):
                training.step()
        elapsed = timer.seconds["steps"]
        results |= {
            f"clip/{name}/images_per_s": n * recipe.batch_size / elapsed,
            f"clip/{name}/s_per_step": elapsed / n,
            f"clip/{name}/gflop_per_step": flops / 1e9,
            f"clip/{name}/flop_utilisation": flops * n / elapsed / peak,
        }
    if naive_steps > 0:
        results["clip/speedup"] = results["clip/optimized/images_per_s"] / results["clip/naive/images_per_s"]
    return results


# ---------------------------------------------------------------- real-size players, random weights


def byte_level_tokenizer(texts: Sequence[str], vocab_size: int = 400) -> Any:
    """A GPT-2-style byte-level BPE tokenizer trained on `texts` (GPT-2's own vocabulary cannot be made offline)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"])
    end = "<|endoftext|>"
    return GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=end, eos_token=end, unk_token=end, pad_token=end
    )


def real_size_players(
    world: WorldConfig, reward: Any, pool_size: int, device: torch.device, seed: int = 0
) -> tuple[Game, Speaker]:
    """The real preset's compute with random weights: open_clip ViT-B-32 listeners (full colour and grayscale, those the
    reward reads) and speaker tower, GPT-2 124M (12 x 768, 50,257 embedding rows), over the embedded world's scenes
    (resized to 224 px inside the models)."""
    import open_clip
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    perceptions = {"full": "full", "gray": "grayscale"}
    listeners = {
        name: Listener(
            name,
            open_clip.create_model("ViT-B-32"),
            open_clip.get_tokenizer("ViT-B-32"),
            make_perception(perceptions.get(name, "full")),
            "ViT-B-32",
        ).to(device)
        for name in reward.listeners
    }
    texts = [c for caps in caption_scenes(sample_scenes(world, "train", 0, 500), CaptionConfig(), 2) for c in caps]
    tokenizer = byte_level_tokenizer(texts)
    lm = GPT2LMHeadModel(GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    speaker = Speaker.build(open_clip.create_model("ViT-B-32").visual, lm, tokenizer, "perceiver").to(device)
    return create_game(world, listeners, reward, pool_size=pool_size), speaker


def bench_env(game: Game, tokenizer: Any, num_envs: int, steps: int, aec_boards: int, max_tokens: int = 16) -> dict:
    """Boards a second of `DixitSpeakerVectorEnv` (num_envs a step, `steps` steps) against the wrapped PettingZoo AEC
    env on the first `aec_boards` of the same boards, one an episode, its listener agents played by the game's
    listener models (`ListenerPolicy`: the picks the vector env's listeners make inside). The speaker says each
    target's description on both; the largest difference of their rewards on a board is reported (0: the same game)."""
    from listener_sub.envs import DixitSpeakerVectorEnv, caption_action, make_env
    from listener_sub.envs.policies import ListenerPolicy

    vector = DixitSpeakerVectorEnv(num_envs, game, tokenizer, max_tokens=max_tokens)
    stream = np.random.default_rng(0)  # the vector env's board stream after reset(seed=0)
    pool = game.pool(vector.split)
    boards = [game.sample(num_envs, stream, vector.split) for _ in range(steps + 1)]
    actions = [
        np.stack([caption_action(tokenizer, pool.describe(int(t)), max_tokens) for t in b.target_items]) for b in boards
    ]  # (num_envs, max_tokens) a step
    vector.reset(seed=0)
    vector.step(actions[0])  # warm-up: the pool's features, the first captions' text features
    start = time.perf_counter()
    vector_rewards = [vector.step(action)[1] for action in actions[1:]]
    vector_s = time.perf_counter() - start

    aec = make_env(game, tokenizer, max_tokens=max_tokens)
    round_ = aec.unwrapped.round
    listeners = {agent: ListenerPolicy(round_, agent, game.choice) for agent in round_.listeners}
    flat = [(b[i : i + 1], action[i]) for b, action in zip(boards[1:], actions[1:]) for i in range(num_envs)]
    aec_rewards = []
    start = time.perf_counter()
    for board, action in flat[:aec_boards]:
        aec.reset(options={"boards": board})  # the vector env's board
        for agent in aec.agent_iter():
            observation, _, termination, truncation, _ = aec.last()
            if termination or truncation:
                aec.step(None)
            else:
                aec.step(action if agent == "speaker_0" else listeners[agent](observation))
        aec_rewards.append(round_.rewards()["speaker_0"])
    aec_s = time.perf_counter() - start
    played = np.concatenate(vector_rewards)[: len(aec_rewards)]
    return {
        "env/vector_boards_per_s": num_envs * steps / vector_s,
        "env/aec_boards_per_s": len(aec_rewards) / aec_s,
        "env/speedup": (num_envs * steps / vector_s) / (len(aec_rewards) / aec_s),
        "env/reward_max_diff": float(np.abs(played - np.array(aec_rewards)).max()),
    }
