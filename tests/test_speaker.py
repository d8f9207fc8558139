"""Speaker: frozen CLIP vision + trainable adapter + frozen GPT-2; sampling, log-probs, training, save/load."""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import listener_sub.models
from listener_sub.adapters import create_adapter
from listener_sub.adapters.io import write_adapter
from listener_sub.errors import DataError
from listener_sub.models.gpt2_fast import FastGPT2
from listener_sub.models.listener import register_model_configs
from listener_sub.models.speaker import Speaker, sample_token
from listener_sub.optim import Schedule
from listener_sub.pretrain.speaker import CaptionerRecipe, train_captioner
from listener_sub.world import ATTRIBUTES, WORLD_VOCAB, WorldConfig, canonical_caption, render, sample_scenes
from listener_sub.world.grammar import END, POSITION_PHRASES, PREFIXES, RELATIONS

TINY_VIT = Path(listener_sub.models.__file__).parent / "model_configs" / "ls-vit-tiny-64.json"
SPECIALS = ["[PAD]", "[EOS]", "[UNK]"]


def caption_words() -> list[str]:
    """Every word the world's caption grammar can produce."""
    phrases = [*PREFIXES, *POSITION_PHRASES.values(), *RELATIONS.values(), "a an", WORLD_VOCAB.generic_noun, END]
    words = {w for values in WORLD_VOCAB.values.values() for w in values} | {w for p in phrases for w in p.split()}
    return sorted(words)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the world's caption words, with [PAD] and [EOS]."""
    vocab = {w: i for i, w in enumerate(SPECIALS + caption_words())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


@pytest.fixture(scope="module", autouse=True)
def tiny_vit_config() -> None:
    open_clip.add_model_config(TINY_VIT)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and much faster than on two oversubscribed cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four rendered world scenes, (4, 64, 64, 3) uint8."""
    return render(sample_scenes(WorldConfig(), "train", 0, 4))


def tiny_lm(tokenizer: PreTrainedTokenizerFast, **config: Any) -> GPT2LMHeadModel:
    """A random 2-layer GPT-2 (`config`: GPT2Config settings besides). initializer_range 0.3: at GPT-2's 0.02 the
    frozen random LM's logits span under ~2 nats, so no prefix can make it spell a caption (caption loss stalls at
    3.39)."""
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=len(tokenizer), initializer_range=0.3,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **config,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def make_speaker(tokenizer: PreTrainedTokenizerFast, kind: str = "perceiver", seed: int = 0) -> Speaker:
    """Random tiny ViT + random 2-layer GPT-2 + a fresh adapter."""
    torch.manual_seed(seed)
    visual = open_clip.create_model("ls-vit-tiny-64", pretrained=None).visual
    cfg = {"width": 64, "heads": 2} if kind == "perceiver" else {}
    return Speaker.build(visual, tiny_lm(tokenizer), tokenizer, kind, **cfg)


def bias_eos(speaker: Speaker, bias: float) -> None:
    """Add `bias` to the LM's EOS logit in every forward pass (cached or teacher-forced)."""

    def hook(module, args, output):
        output.logits[..., speaker.eos_id] += bias

    speaker.lm.register_forward_hook(hook)


@pytest.mark.parametrize("kind", ["perceiver", "mlp"])
def test_prefix_shapes_and_image_formats(tokenizer, images, kind):
    speaker = make_speaker(tokenizer, kind)
    assert speaker.adapter.uses_tokens == (kind == "perceiver")
    with torch.no_grad():
        from_numpy = speaker.prefix(images)
        from_tensor = speaker.prefix(torch.from_numpy(images))
        from_float = speaker.prefix(torch.from_numpy(images).permute(0, 3, 1, 2) / 255)
        resized = speaker.prefix(torch.rand(2, 3, 40, 40))
    assert from_numpy.shape == (4, 8, 64) and resized.shape == (2, 8, 64)
    torch.testing.assert_close(from_tensor, from_numpy)
    torch.testing.assert_close(from_float, from_numpy)
    features = speaker.encode(images)
    assert features.tokens.shape == (4, 64, 64) and features.pooled.shape == (4, 64)  # 8x8 patches, width 64
    with pytest.raises(ValueError, match="images"):
        speaker.prefix(torch.rand(2, 40, 40))


def test_normalisation_uses_the_clip_preprocess_config(tokenizer):
    speaker = make_speaker(tokenizer)
    gray = torch.full((1, 3, 64, 64), 0.5)
    expected = (0.5 - torch.tensor(open_clip.OPENAI_DATASET_MEAN)) / torch.tensor(open_clip.OPENAI_DATASET_STD)
    torch.testing.assert_close(speaker.visual.pixels(gray)[0, :, 0, 0], expected)


def test_only_the_adapter_is_trainable_and_gets_gradients(tokenizer, images):
    speaker = make_speaker(tokenizer)
    trainable = {n for n, p in speaker.named_parameters() if p.requires_grad}
    assert trainable == {f"adapter.{n}" for n, _ in speaker.adapter.named_parameters()}
    speaker.train()
    gen = speaker.generate(images, k=2, generator=torch.Generator().manual_seed(0))
    prefix = speaker.prefix(images).repeat_interleave(2, dim=0)  # the RL path: prefix with grad, then log-probs
    per_token, mask = speaker.log_probs(prefix, gen.tokens, gen.lengths)
    (per_token.sum() / mask.sum() + speaker.caption_loss(images, ["a red object."] * 4)).backward()
    assert all(p.grad is not None for p in speaker.adapter.parameters())
    assert all(p.grad is None for p in speaker.visual.parameters())
    assert all(p.grad is None for p in speaker.lm.parameters())


def test_train_keeps_vision_and_lm_in_eval_mode(tokenizer):
    speaker = make_speaker(tokenizer).train()
    assert speaker.training and speaker.adapter.training
    assert not any(m.training for m in speaker.visual.modules())
    assert not any(m.training for m in speaker.lm.modules())
    speaker.eval()
    assert not speaker.adapter.training


def test_kv_cache_log_probs_equal_teacher_forced_log_probs(tokenizer, images):
    speaker = make_speaker(tokenizer)
    bias_eos(speaker, 2.0)  # a mix of finished and unfinished samples
    gen = speaker.generate(images, k=8, max_new_tokens=10, generator=torch.Generator().manual_seed(1))
    assert gen.lengths.min() < 10 and gen.lengths.max() == 10
    per_token, mask = speaker.log_probs(speaker.prefix(images).repeat_interleave(8, dim=0), gen.tokens, gen.lengths)
    torch.testing.assert_close(mask, gen.mask)
    assert (per_token - gen.token_log_probs).abs().max() < 1e-4
    assert (mask.sum(1) == gen.lengths).all() and (per_token[mask == 0] == 0).all()


def assert_steps_match_the_forward(speaker: Speaker, images: np.ndarray, atol: float) -> None:
    """FastGPT2's read of the prefix and six decoding steps give the LM's cached forward's logits (within atol)."""
    fast = FastGPT2(speaker.lm, speaker.vocab_size)
    with torch.no_grad():
        prefix = speaker.prefix(images)  # (4, M, d_lm)
        first, cache = speaker._read_prefix(prefix, 2)  # (8, 1, V'), the LM's own keys and values
        fast_first, past = fast.read(prefix, 2)
        torch.testing.assert_close(fast_first.float(), first[..., : speaker.vocab_size].float(), atol=atol, rtol=0)
        step = fast.decoder(past, 6)
        token, M, kv = first[:, -1].argmax(-1), speaker.n_prefix, {speaker.cache_arg: cache}
        for t in range(6):
            mask = torch.ones(len(token), M + t + 1, dtype=torch.long)
            out = speaker.lm(input_ids=token[:, None], attention_mask=mask, use_cache=True, **kv)
            expected = out.logits[:, -1, : speaker.vocab_size].float()  # (8, V)
            torch.testing.assert_close(step(token, t), expected, atol=atol, rtol=0)
            token = torch.multinomial(expected.softmax(-1), 1).squeeze(-1)  # a varied next token


def gpt2_speaker(tokenizer: PreTrainedTokenizerFast, activation: str = "gelu_new") -> Speaker:
    torch.manual_seed(0)
    visual = open_clip.create_model("ls-vit-tiny-64", pretrained=None).visual
    return Speaker.build(visual, tiny_lm(tokenizer, activation_function=activation), tokenizer, "perceiver")


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh"])
def test_a_gpt2_decodes_in_plain_ops_as_through_its_own_forward(tokenizer, images, activation, monkeypatch):
    """FastGPT2: the prefix's and each step's logits equal the LM's cached forward's, and sampling with it draws the
    same captions with the same log-probs as sampling through the forward."""
    speaker = gpt2_speaker(tokenizer, activation)
    assert FastGPT2.fits(speaker.lm)
    assert_steps_match_the_forward(speaker, images, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as on a GPU: bf16 keys and values, bf16 products
        assert_steps_match_the_forward(speaker, images, atol=0.3)  # bf16 rounding (a wrong position: errors of 4+)

    def sample():
        return speaker.generate(images, k=16, max_new_tokens=10, generator=torch.Generator().manual_seed(1))

    fast = sample()
    monkeypatch.setattr(FastGPT2, "fits", staticmethod(lambda lm: False))
    forward = sample()
    assert fast.lengths.min() < 10 and fast.lengths.max() == 10  # rows that ended and rows that did not
    assert torch.equal(fast.tokens, forward.tokens) and torch.equal(fast.lengths, forward.lengths)
    torch.testing.assert_close(fast.token_log_probs, forward.token_log_probs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 4])
def test_a_gpt2_scores_captions_in_plain_ops_as_through_its_own_forward(tokenizer, images, k, monkeypatch):
    """FastGPT2 in log_probs: the same log-probs and the same gradient to the prefix as the LM's forward, for captions
    of every length (a one-token caption among them), a prefix shared by k captions or not."""
    speaker = gpt2_speaker(tokenizer)
    gen = speaker.generate(images, k=k, max_new_tokens=10, generator=torch.Generator().manual_seed(3))
    lengths = gen.lengths.clone()
    lengths[0] = 1
    prefix = speaker.prefix(images)  # (B, M, d_lm), with grad to the adapter
    weights = torch.randn(len(gen.tokens), gen.tokens.shape[1])  # a gradient that tells the rows apart
    results = []
    for fits in (FastGPT2.fits, lambda lm: False):
        monkeypatch.setattr(FastGPT2, "fits", staticmethod(fits))
        per_token, mask = speaker.log_probs(prefix, gen.tokens, lengths, k)
        results.append((per_token, mask, torch.autograd.grad((weights * per_token).sum(), prefix)[0]))
    (fast, fast_mask, fast_grad), (forward, forward_mask, forward_grad) = results
    torch.testing.assert_close(fast, forward, atol=1e-5, rtol=0)
    assert torch.equal(fast_mask, forward_mask) and fast_mask[0].sum() == 1
    torch.testing.assert_close(fast_grad, forward_grad, atol=1e-5, rtol=1e-4)
    assert forward_grad.abs().max() > 1e-3  # the gradient compared is not nothing


def test_the_plain_ops_are_only_for_the_gpt2_they_compute_exactly(tokenizer):
    """In training mode (dropout), with LoRA layers in its projections, a forward or backward hook, another attention
    scaling or activation, or another LM: the LM runs its own forward."""
    assert FastGPT2.fits(tiny_lm(tokenizer).eval())
    assert not FastGPT2.fits(tiny_lm(tokenizer).train())
    lora = get_peft_model(tiny_lm(tokenizer), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    assert not FastGPT2.fits(lora.base_model.model.eval())  # a GPT2LMHeadModel whose c_attn now adds a LoRA product
    hooked = tiny_lm(tokenizer).eval()
    hooked.transformer.h[1].mlp.register_forward_hook(lambda module, args, output: output * 2)
    assert not FastGPT2.fits(hooked)
    hooked = tiny_lm(tokenizer).eval()
    hooked.transformer.ln_f.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    assert not FastGPT2.fits(hooked)
    assert not FastGPT2.fits(tiny_lm(tokenizer, scale_attn_by_inverse_layer_idx=True).eval())
    assert not FastGPT2.fits(tiny_lm(tokenizer, activation_function="relu").eval())
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    assert not FastGPT2.fits(LlamaForCausalLM(llama).eval())


def test_a_prefix_read_once_for_k_captions_scores_them_as_k_copies_of_it_do(tokenizer, images):
    """log_probs(prefix, ..., k) reads each prefix once and shares its keys and values: the same log-probs and the
    same gradient to the prefix as a pass over the prefix repeated k times; a one-token caption too."""
    speaker = make_speaker(tokenizer)
    bias_eos(speaker, 2.0)
    gen = speaker.generate(images, k=4, max_new_tokens=10, generator=torch.Generator().manual_seed(1))
    assert gen.lengths.min() < 10 and gen.lengths.max() == 10
    prefix = speaker.prefix(images)  # (B, M, d_lm), with grad to the adapter
    shared, mask = speaker.log_probs(prefix, gen.tokens, gen.lengths, 4)
    repeated, repeated_mask = speaker.log_probs(prefix.repeat_interleave(4, 0), gen.tokens, gen.lengths)
    torch.testing.assert_close(shared, repeated, atol=1e-5, rtol=0)
    assert torch.equal(mask, repeated_mask)
    weights = torch.randn_like(shared)  # a gradient that tells the rows apart
    grads = [torch.autograd.grad((weights * lp).sum(), prefix, retain_graph=True)[0] for lp in (shared, repeated)]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    first = gen.tokens[:, :1]
    one = speaker.log_probs(prefix, first, torch.ones(len(first), dtype=torch.long), 4)[0]
    torch.testing.assert_close(one, shared[:, :1], atol=1e-5, rtol=0)


def test_eos_handling(tokenizer, images):
    speaker = make_speaker(tokenizer)
    bias_eos(speaker, 2.0)
    gen = speaker.generate(images, k=16, max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    width = gen.tokens.shape[1]
    assert gen.tokens.dtype == torch.int64 and width == 8 and len(gen.texts) == 64
    ended = (gen.tokens == speaker.eos_id).any(1)
    assert ended.any() and not ended.all()
    for row, n, has_eos in zip(gen.tokens, gen.lengths.tolist(), ended.tolist()):
        assert (row[n:] == speaker.pad_id).all()  # pad after EOS
        assert (row[: n - 1] != speaker.eos_id).all()
        assert row[n - 1] == speaker.eos_id if has_eos else n == 8  # no EOS: max_new_tokens
    assert (gen.mask.sum(1) == gen.lengths).all()
    assert gen.texts == speaker.decode(gen.tokens, gen.lengths)
    assert not any("[EOS]" in t or "[PAD]" in t for t in gen.texts)


def test_generation_stops_when_all_finished(tokenizer, images):
    speaker = make_speaker(tokenizer)
    bias_eos(speaker, 100.0)
    gen = speaker.generate(images, k=2, max_new_tokens=16)
    assert gen.tokens.shape == (8, 1) and (gen.tokens == speaker.eos_id).all() and (gen.lengths == 1).all()
    assert gen.texts == [""] * 8


def test_greedy_is_deterministic_and_argmax(tokenizer, images):
    speaker = make_speaker(tokenizer)
    first = speaker.generate(images, k=2, greedy=True, max_new_tokens=6)
    second = speaker.generate(images, k=2, greedy=True, max_new_tokens=6)
    assert torch.equal(first.tokens, second.tokens) and first.texts == second.texts
    assert torch.equal(first.tokens[0::2], first.tokens[1::2])  # k copies of one image agree
    M = speaker.n_prefix
    prefix = speaker.prefix(images).detach().repeat_interleave(2, 0)  # (B*k, M, D)
    embeds = torch.cat([prefix, speaker.lm.get_input_embeddings()(first.tokens)], 1)  # (B*k, M + L, D)
    with torch.no_grad():
        logits = speaker.lm(inputs_embeds=embeds).logits[:, M - 1 : -1]  # (B*k, L, V)
    mask = first.mask.bool()
    assert torch.equal(logits.argmax(-1)[mask], first.tokens[mask])
    # filters that leave one candidate give the argmax too
    top1 = speaker.generate(images, k=2, top_k=1, max_new_tokens=6, generator=torch.Generator().manual_seed(5))
    nucleus = speaker.generate(images, k=2, top_p=1e-6, max_new_tokens=6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(top1.tokens, first.tokens) and torch.equal(nucleus.tokens, first.tokens)


def test_seeded_sampling_is_reproducible(tokenizer, images):
    speaker = make_speaker(tokenizer)
    a = speaker.generate(images, k=4, temperature=1.5, top_k=10, top_p=0.9, generator=torch.Generator().manual_seed(7))
    b = speaker.generate(images, k=4, temperature=1.5, top_k=10, top_p=0.9, generator=torch.Generator().manual_seed(7))
    c = speaker.generate(images, k=4, temperature=1.5, top_k=10, top_p=0.9, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts
    assert not torch.equal(a.tokens, c.tokens)
    with pytest.raises(ValueError, match="temperature"):
        speaker.generate(images, temperature=0.0)


def test_sample_token_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_token(logits, top_k=2, generator=g).tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # 0.64, 0.24, 0.09, 0.03: the nucleus of 0.8 is {0, 1}
    assert set(sample_token(logits, top_p=0.8, generator=g).tolist()) == {0, 1}
    assert set(sample_token(logits, top_p=float(probs[0]) + 1e-3, generator=g).tolist()) == {0, 1}
    cold = sample_token(logits, temperature=0.05, generator=g)
    assert (cold == 0).all()


def test_caption_loss_matches_lm_loss_with_ignored_labels(tokenizer, images):
    speaker = make_speaker(tokenizer)
    captions = ["a red object.", "there is a small blue circle on the left.", "a square.", "an outlined cross."]
    tokens, lengths = speaker.encode_captions(captions)
    assert tokens.shape == (4, 11) and lengths.tolist() == [5, 11, 4, 5]  # words + "." + EOS
    assert (tokens[torch.arange(4), lengths - 1] == speaker.eos_id).all() and tokens[2, 4:].eq(speaker.pad_id).all()
    with torch.no_grad():
        loss = speaker.caption_loss(images, captions)
        prefix = speaker.prefix(images)
        M = prefix.shape[1]
        mask = (torch.arange(11) < lengths[:, None]).long()
        labels = torch.cat([torch.full((4, M), -100), tokens.masked_fill(mask == 0, -100)], 1)
        embeds = torch.cat([prefix, speaker.lm.get_input_embeddings()(tokens)], 1)
        attention = torch.cat([torch.ones(4, M, dtype=torch.long), mask], 1)
        reference = speaker.lm(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["perceiver", "mlp"])
def test_save_load_adapter_round_trip(tokenizer, images, tmp_path, kind):
    speaker = make_speaker(tokenizer, kind, seed=0)
    path = tmp_path / "speaker" / "adapter.safetensors"
    speaker.save_adapter(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["kind"] == kind and meta["config"]["n_latents"] == 8
    assert sorted(p.name for p in path.parent.iterdir()) == ["adapter.json", "adapter.safetensors"]  # no temporaries

    torch.manual_seed(1)
    other = Speaker.build(speaker.visual, speaker.lm, tokenizer, "perceiver", width=32, heads=2, n_latents=3)
    other.load_adapter(path)
    assert type(other.adapter) is type(speaker.adapter)
    with torch.no_grad():
        assert torch.equal(other.prefix(images), speaker.prefix(images))
    for settings in ({"greedy": True}, {"temperature": 1.0}):
        ours = speaker.generate(images, k=2, generator=torch.Generator().manual_seed(3), **settings)
        theirs = other.generate(images, k=2, generator=torch.Generator().manual_seed(3), **settings)
        assert torch.equal(ours.tokens, theirs.tokens) and ours.texts == theirs.texts
    with pytest.raises(DataError, match="missing.safetensors holds no adapter"):
        other.load_adapter(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="width"):
        Speaker(speaker.visual, speaker.lm, tokenizer, create_adapter(kind, d_vision=32, d_lm=64))
    write_adapter(create_adapter(kind, d_vision=32, d_lm=64), tmp_path / "narrow.safetensors")
    with pytest.raises(
        DataError,
        match=rf"adapter .*narrow\.safetensors does not fit this speaker: {kind} adapter maps width 32 -> 64, but",
    ):
        other.load_adapter(tmp_path / "narrow.safetensors")  # a file from the user: one line, not a traceback


def test_captioning_training_conditions_the_lm_on_the_image(tokenizer, images):
    """Four images with one fixed caption each: loss falls and greedy captions name each image's own caption."""
    speaker = make_speaker(tokenizer)
    scenes = sample_scenes(WorldConfig(), "train", 0, 4)
    captions = [canonical_caption(scenes.objects(b)[0], ATTRIBUTES) for b in range(4)]
    assert len(set(captions)) == 4
    start = time.perf_counter()
    per_image = [[c] for c in captions]
    losses = train_captioner(
        speaker,
        images,
        per_image,
        CaptionerRecipe(steps=300, batch_size=4, lr=3e-3, schedule=Schedule(20, 0.1)),
        progress=False,
    )
    elapsed = time.perf_counter() - start
    print(f"captioner: loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.4f} in {elapsed:.1f}s")
    assert not speaker.training
    assert np.mean(losses[-10:]) < 0.05 * losses[0]
    gen = speaker.generate(images, greedy=True, max_new_tokens=16)
    assert gen.texts == speaker.decode(*speaker.encode_captions(captions))


def test_vit_b32_and_gpt2_speaker_generates_on_cpu(tokenizer, images):
    """Acceptance: a ViT-B-32 vision tower and a full-size GPT-2 (random weights) caption an image on CPU."""
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    speaker = Speaker.build(clip, GPT2LMHeadModel(GPT2Config()), tokenizer, "perceiver")
    assert speaker.encode(images[:1]).tokens.shape == (1, 49, 768)  # 7x7 patches of the resized 224 image
    gen = speaker.generate(images[:1], max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    assert (
        speaker.prefix(images[:1]).shape == (1, 8, 768) and gen.tokens.shape[0] == 1 and 1 <= int(gen.lengths[0]) <= 8
    )
    assert isinstance(gen.texts[0], str)


def test_resnet_tower_tokens_carry_position(tokenizer):
    register_model_configs()
    clip = open_clip.create_model("ls-rn-tiny-64", pretrained=None)
    speaker = Speaker.build(clip, tiny_lm(tokenizer), tokenizer, "perceiver", n_latents=4, width=32, heads=2)
    blank = np.full((1, 64, 64, 3), 40, dtype=np.uint8)
    features = speaker.encode(blank)
    assert features.tokens.shape == (1, 4, 256) and features.pooled.shape == (1, 64)  # 2x2 map of width 8*32
    # identical cells of a blank image differ only by the attention pool's positional embedding
    assert (features.tokens[0, 0] - features.tokens[0, 1]).abs().max() > 1e-3
    assert speaker.generate(blank, max_new_tokens=4).tokens.shape[0] == 1
