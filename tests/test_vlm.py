"""The VLM speaker kind on tiny random-init VLMs of two architectures (LLaVA, Idefics3) saved in the real formats:
sampling and teacher forcing agree, the reference is the base model exactly, only LoRA weights learn, adapters save
and load, and one trained for another base model is refused."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_game import one_thread  # noqa: F401 (an autouse fixture: one torch thread)
from tiny_vlms import save_idefics3, save_llava
from transformers import AutoModelForImageTextToText

from listener_sub.errors import DataError
from listener_sub.models.vlm import BASE_FILE, create_vlm_speaker

BUILDERS = {"llava": save_llava, "idefics3": save_idefics3}


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlms")
    return {name: build(root / name) for name, build in BUILDERS.items()}


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)


def nudge(speaker, scale: float = 0.5) -> None:
    """Move every LoRA weight off its initialisation (B = 0 leaves the policy equal to the base model)."""
    with torch.no_grad():
        for p in speaker.trainable.parameters():
            if not p.requires_grad:
                continue
            p.add_(torch.randn_like(p) * scale)


@pytest.mark.parametrize("arch", BUILDERS)
def test_sampled_log_probs_are_the_teacher_forced_ones(vlm_dirs, arch):
    speaker = create_vlm_speaker(vlm_dirs[arch], prompt="describe the image")
    nudge(speaker)
    prompt = speaker.adapt(speaker.encode(images(3)))
    gen = speaker.sample(prompt, k=2, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    assert gen.tokens.shape[0] == 6 and len(gen.texts) == 6
    logp, mask = speaker.log_probs(prompt.repeat_interleave(2, 0), gen.tokens, gen.lengths)
    assert torch.allclose(logp, gen.token_log_probs * mask, atol=1e-4)
    greedy = speaker.sample(prompt, k=1, max_new_tokens=6, greedy=True)
    assert speaker.sample(prompt, k=1, max_new_tokens=6, greedy=True).texts == greedy.texts


@pytest.mark.parametrize("arch", BUILDERS)
def test_each_prompt_is_read_once_for_its_k_captions_and_gives_the_repeated_prompts_log_probs(vlm_dirs, arch):
    """log_probs shares each prompt's keys and values among its k captions (with gradients too, through the shared
    cache); the prompt repeated k times in one pass (what a DistributedDataParallel policy runs) gives the same
    log-probs and the same LoRA gradient, policy and reference."""
    speaker = create_vlm_speaker(vlm_dirs[arch], prompt="describe the image")
    nudge(speaker)
    inputs = speaker.encode(images(3))
    gen = speaker.sample(speaker.adapt(inputs), k=3, max_new_tokens=6, generator=torch.Generator().manual_seed(1))
    assert int(gen.lengths.min()) < gen.tokens.shape[1]  # some caption ends early: its padding is masked out
    lora = [p for p in speaker.trainable.parameters() if p.requires_grad]
    for policy in (None, speaker.reference_policy()):
        prompt = speaker.adapt(inputs, policy)
        shared, mask = speaker.log_probs(prompt, gen.tokens, gen.lengths, k=3)
        repeated, same_mask = speaker.log_probs(prompt.repeat_interleave(3), gen.tokens, gen.lengths, k=1)
        assert torch.equal(mask, same_mask)
        assert torch.allclose(shared, repeated, atol=1e-5), (shared - repeated).abs().max()
        assert (shared[mask == 0] == 0).all() and (shared[mask == 1] < 0).all()
        if policy is None:  # the policy's gradient flows through the shared keys and values alike
            grads = [torch.autograd.grad(logp.sum(), lora) for logp in (shared, repeated)]
            assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(*grads))
            assert any(g.abs().sum() > 0 for g in grads[0])


@pytest.mark.parametrize("arch", BUILDERS)
def test_the_reference_is_the_base_model_and_only_lora_learns(vlm_dirs, arch):
    speaker = create_vlm_speaker(vlm_dirs[arch], prompt="describe the image")
    base = AutoModelForImageTextToText.from_pretrained(vlm_dirs[arch]).eval()
    inputs = speaker.encode(images(2, seed=1))
    gen = speaker.sample(speaker.adapt(inputs), k=1, max_new_tokens=5, generator=torch.Generator().manual_seed(1))
    nudge(speaker)
    policy, mask = speaker.log_probs(speaker.adapt(inputs), gen.tokens, gen.lengths)
    reference, _ = speaker.log_probs(speaker.adapt(inputs, speaker.reference_policy()), gen.tokens, gen.lengths)
    ids = torch.cat([inputs.input_ids, gen.tokens], 1)
    attention = torch.cat([inputs.attention_mask, mask.long()], 1)
    with torch.no_grad():
        logits = base(input_ids=ids, attention_mask=attention, **inputs.pixels).logits
    P = inputs.input_ids.shape[1]
    policy_logits = speaker.policy_logits(logits[:, P - 1 : -1])  # the same tokens ruled out (special ones but EOS)
    expected = policy_logits.log_softmax(-1).gather(-1, gen.tokens[..., None]).squeeze(-1) * mask
    assert torch.equal(reference, expected)  # the adapter disabled is the base model, exactly
    assert not torch.allclose(policy, reference)  # the nudged adapter does move the policy
    (-policy.sum()).backward()
    learnt = {n for n, p in speaker.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert learnt and all("lora_" in n for n in learnt)
    assert all(not p.requires_grad for n, p in speaker.model.named_parameters() if "lora_" not in n)
    assert all(".language_model." in n or ".text_model." in n for n in learnt)  # the vision tower has no adapter


def test_adapters_save_load_and_refuse_another_base_model(vlm_dirs, tmp_path):
    speaker = create_vlm_speaker(vlm_dirs["llava"], prompt="describe the image")
    nudge(speaker)
    folder = speaker.save_adapter(tmp_path / "lora")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", BASE_FILE]
    before = speaker.generate(images(2), max_new_tokens=6, greedy=True)
    again = create_vlm_speaker(vlm_dirs["llava"], prompt="describe the image", adapter=folder)
    assert again.generate(images(2), max_new_tokens=6, greedy=True).texts == before.texts
    other = create_vlm_speaker(vlm_dirs["idefics3"], prompt="describe the image")
    with pytest.raises(DataError, match="was trained for the base model .*llava.*speaker.name="):
        other.load_adapter(folder)
    (folder / BASE_FILE).unlink()  # an adapter from elsewhere, without the fingerprint: its tensors must still fit
    with pytest.raises(DataError, match="does not fit"):
        create_vlm_speaker(vlm_dirs["llava"], prompt="describe the image", lora_r=4).load_adapter(folder)
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["r"] == 8


def test_settings_that_cannot_work_are_named_before_weights_are_read(vlm_dirs, tmp_path):
    from types import SimpleNamespace

    from transformers import GPT2Config

    from listener_sub.models.vlm import VLMConfig, check_vlm, prompt_text

    assert check_vlm(VLMConfig(name=str(vlm_dirs["llava"]), prompt="describe the image"), 16) is None
    assert check_vlm(VLMConfig(name=str(vlm_dirs["idefics3"])), 16) is None
    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")
    assert "is a 'gpt2' model, not an image-text-to-text model" in check_vlm(VLMConfig(name=str(tmp_path / "gpt2")), 8)
    missing = check_vlm(VLMConfig(name=str(vlm_dirs["llava"]), target_modules=["query"]), 8)
    assert "no linear module(s) named ['query']" in missing and "q_proj" in missing
    long = check_vlm(VLMConfig(name=str(vlm_dirs["llava"]), prompt="describe the image " * 40), 16)
    assert "past the model's context of 128" in long
    assert "is not a directory" in check_vlm(VLMConfig(name=str(tmp_path / "nothing")), 8)
    (tmp_path / "empty").mkdir()
    assert "no model config there" in check_vlm(VLMConfig(name=str(tmp_path / "empty")), 8)
    with pytest.raises(ValueError, match="no image token"):
        prompt_text(SimpleNamespace(chat_template=None), "describe")


def test_the_rl_loop_trains_only_the_lora_weights_and_resumes_bit_for_bit(vlm_dirs, tmp_path):
    """The project's own REINFORCE loop with a VLM speaker (Python API): LoRA weights move, the base model does not,
    checkpoints hold the LoRA folder, and 2 + 2 steps resumed equal 4 steps straight."""
    from test_rl import held_out, rl_config
    from tiny_game import tiny_game, tiny_listeners

    from listener_sub.models.vlm import LORA_DIR
    from listener_sub.rl import Trainer

    def speaker():
        return create_vlm_speaker(vlm_dirs["llava"], prompt="describe the image", lora_r=4)

    base = {n: p.clone() for n, p in speaker().model.named_parameters() if "lora_" not in n}
    weights = []
    for name, parts in (("straight", [4]), ("split", [2, 4])):
        for i, steps in enumerate(parts):
            cfg = rl_config(steps=steps, boards=4, k=2, max_new_tokens=4, save_every=2, lr=1e-2)
            trainer = Trainer(cfg, speaker(), tiny_game(tiny_listeners(), pool_size=32), tmp_path / name, held_out(4))
            result = trainer.fit(resume=i > 0)
        weights.append({n: p.detach().clone() for n, p in trainer.speaker.model.named_parameters()})
    assert set(result) >= {"before", "after"} and np.isfinite(result["after"]["kl"])
    assert (tmp_path / "straight" / "checkpoints" / "step_000004" / LORA_DIR / "adapter_model.safetensors").is_file()
    straight, split = weights
    assert all(torch.equal(straight[n], split[n]) for n in straight)  # resumed = uninterrupted, bit for bit
    assert all(torch.equal(straight[n], base[n]) for n in base)  # the base model never moves
    moved = [n for n in straight if "lora_B" in n and straight[n].abs().sum() > 0]
    assert moved  # lora_B starts at 0: the loop trained the adapter


@pytest.mark.parametrize("arch", ["llava", pytest.param("idefics3", marks=pytest.mark.slow)])
def test_train_eval_rollout_and_inspect_play_a_vlm_speaker(vlm_dirs, arch, warm_cache, tmp_path, monkeypatch):
    """speaker=vlm through the command line on the session's tiny listeners: train (LoRA checkpoints), eval of the run
    and of its LoRA folder (the same numbers as train's own evaluation after RL), rollout and inspect."""
    from test_rl import TINY

    from listener_sub import cli

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    vlm = ["speaker=vlm", f"speaker.name={vlm_dirs[arch]}", "speaker.prompt=describe the image"]
    common = [o for o in TINY if not o.startswith(("speaker.", "lm."))] + vlm + ["trainer.max_new_tokens=6"]
    run = tmp_path / "run"
    cli.main(
        ["train", *common, "trainer.steps=2", "trainer.save_every=1", "trainer.eval_every=0", f"hydra.run.dir={run}"]
    )
    trained = json.loads((run / "summary.json").read_text())
    assert trained["steps"] == 2 and trained["config"]["speaker"]["kind"] == "vlm"
    lora = run / "checkpoints" / "step_000002" / "lora"
    assert (lora / "adapter_model.safetensors").is_file() and not (
        run / "checkpoints" / "step_000002" / "adapter.safetensors"
    ).exists()
    for name, checkpoint in (("eval_run", []), ("eval_lora", [f"checkpoint={lora}"])):
        cli.main(["eval", f"run={run}", *checkpoint, f"hydra.run.dir={tmp_path / name}"])
        after = json.loads((tmp_path / name / "summary.json").read_text())["after"]
        assert {k: after[k] for k in ("gap", "reward", "kl")} == {
            k: trained["after"][k] for k in ("gap", "reward", "kl")
        }
    cli.main(["rollout", f"run={run}", "episodes=2", f"hydra.run.dir={tmp_path / 'rollout'}"])
    assert len((tmp_path / "rollout" / "rollouts.jsonl").read_text().splitlines()) == 2
    cli.main(["inspect", f"run={run}", "boards=2", f"hydra.run.dir={tmp_path / 'inspect'}"])
    assert (tmp_path / "inspect" / "report.html").read_text().count('<article class="board') == 2


@pytest.mark.slow
def test_the_naive_vlm_step_plays_the_same_game_and_bench_measures_both(vlm_dirs, tmp_path):
    """The bench's naive twin of the VLM step (no KV cache, each prompt read k times, vision twice) gives the same
    captions, rewards and LoRA update as the trainer's step; bench_rl reports both."""
    from test_rl import held_out, rl_config
    from tiny_game import tiny_game, tiny_listeners

    from listener_sub.bench import NaiveStep, bench_rl
    from listener_sub.rl import Trainer

    speaker = create_vlm_speaker(vlm_dirs["llava"], prompt="describe the image", lora_r=4)
    nudge(speaker, 0.05)
    cfg = rl_config(boards=4, k=2, max_new_tokens=5)
    trainer = Trainer(cfg, speaker, tiny_game(tiny_listeners(), pool_size=32), tmp_path, held_out(4))
    start = trainer.save()

    def update() -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each LoRA weight and the gradient that moved it (AdamW's first moment after one step: (1 - beta1) g)."""
        state = trainer.optimizer.state
        return [
            (p.detach().clone(), state[p]["exp_avg"].clone()) for p in speaker.model.parameters() if p.requires_grad
        ]

    fast = trainer.train_step()
    fast_update = update()
    trainer.load(start)
    slow = NaiveStep(trainer)()
    assert slow == pytest.approx(fast, rel=1e-4, abs=1e-5)
    for (weight, moment), (fast_weight, fast_moment) in zip(update(), fast_update):
        torch.testing.assert_close(moment, fast_moment, rtol=1e-4, atol=1e-7)  # the same gradient
        # AdamW's first step moves each weight by about lr * sign(g): a gradient within float noise of 0 may move it
        # by anything up to lr either way
        torch.testing.assert_close(weight, fast_weight, rtol=0, atol=cfg.lr)
    before = trainer.step
    results = bench_rl(trainer, steps=1, naive_steps=1)
    assert results["rl/naive/gflop_per_step"] > results["rl/optimized/gflop_per_step"] > 0
    assert trainer.step == before  # the bench leaves the trainer as it found it


def train_vlm_rank(rank: int, world: int, port: int, vlm_dir: str, run_dir: str) -> None:
    """One rank of a torchrun-style run with the VLM speaker: LoRA wrapped in DistributedDataParallel."""
    import os

    from test_distributed import BOARDS
    from test_rl import held_out, rl_config
    from tiny_game import tiny_game, tiny_listeners

    from listener_sub.distributed import join, leave
    from listener_sub.rl import Trainer

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    ranks = join(torch.device("cpu"))
    speaker = create_vlm_speaker(vlm_dir, prompt="describe the image", lora_r=4)
    cfg = rl_config(steps=2, boards=BOARDS // 2, k=2, max_new_tokens=4, baseline="mean", lr=1e-2)
    trainer = Trainer(cfg, speaker, tiny_game(tiny_listeners(), pool_size=32), run_dir, held_out(4), ranks)
    trainer.fit()
    lora = {n: p.detach() for n, p in speaker.model.named_parameters() if p.requires_grad}
    torch.save(lora, f"{run_dir}/lora_rank{rank}.pt")
    leave()


@pytest.mark.slow
def test_two_ranks_train_the_vlm_like_one_process_with_twice_the_boards(vlm_dirs, tmp_path):
    import torch.multiprocessing as mp
    from test_distributed import BOARDS, free_port
    from test_rl import held_out, rl_config
    from tiny_game import tiny_game, tiny_listeners

    from listener_sub.rl import Trainer

    run = tmp_path / "two_ranks"
    run.mkdir()
    mp.spawn(train_vlm_rank, args=(2, free_port(), str(vlm_dirs["llava"]), str(run)), nprocs=2, join=True)
    ranks = [torch.load(run / f"lora_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][n], ranks[1][n]) for n in ranks[0])  # DDP kept the ranks' LoRA weights in step
    speaker = create_vlm_speaker(vlm_dirs["llava"], prompt="describe the image", lora_r=4)
    cfg = rl_config(steps=2, boards=BOARDS, k=2, max_new_tokens=4, baseline="mean", lr=1e-2)
    Trainer(cfg, speaker, tiny_game(tiny_listeners(), pool_size=32), tmp_path / "one", held_out(4)).fit()
    single = {n: p.detach() for n, p in speaker.model.named_parameters() if p.requires_grad}
    change = torch.cat([single[n].flatten() for n in single if "lora_B" in n])  # lora_B starts at 0
    difference = torch.cat([(ranks[0][n] - single[n]).flatten() for n in single])
    assert change.norm() > 0 and difference.norm() < 1e-2 * change.norm()


def test_an_open_clip_vit_is_the_embedded_llavas_tower_exactly():
    """The embedded VLM's tower is the open_clip ViT's own weights: transformers' CLIP vision model gives the same
    tokens; a ResNet tower is refused; a caption batch puts its labels on the caption and EOS only."""
    import open_clip

    from listener_sub.models.listener import register_model_configs
    from listener_sub.models.vision import clip_preprocess
    from listener_sub.pretrain.lm import IGNORE
    from listener_sub.pretrain.vlm import VLMRecipe, build_llava, caption_batch, clip_vision_config, vlm_tokenizer
    from listener_sub.world import WORLD_VOCAB

    register_model_configs()
    torch.manual_seed(0)
    visual = open_clip.create_model("ls-vit-tiny-64", pretrained=None).visual.eval()
    _, mean, std = clip_preprocess(visual)
    tokenizer = vlm_tokenizer(["a red circle .", "the big blue square ."], "describe the image", WORLD_VOCAB)
    recipe = VLMRecipe(text_width=32, text_layers=1, text_heads=2, text_mlp=64)
    model, processor = build_llava(visual, mean, std, tokenizer, recipe)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = visual.transformer(visual._embeds(x))  # (B, 1 + T, W)
        theirs = model.model.vision_tower(x, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    with pytest.raises(ValueError, match="needs an open_clip ViT"):
        clip_vision_config(open_clip.create_model("ls-rn-tiny-64", pretrained=None).visual)

    texts = ["a red circle .", "the big blue square ."]
    batch = caption_batch(processor, "<image>describe the image", images(2), texts)
    ids, labels = batch["input_ids"], batch["labels"]
    assert int((ids[0] == tokenizer.convert_tokens_to_ids("<image>")).sum()) == 64  # (64 / 8)^2 patch tokens
    eos = tokenizer.eos_token_id
    for row, caption in enumerate(texts):
        kept = labels[row][labels[row] != IGNORE].tolist()
        assert kept == tokenizer(caption, add_special_tokens=False)["input_ids"] + [eos]
    assert model(**batch).loss.item() == pytest.approx(np.log(len(tokenizer)), rel=0.2)  # near uniform at init


def test_the_embedded_vlm_is_built_once_and_plays_through_the_command_line(warm_cache, tmp_path, monkeypatch):
    """speaker=vlm without a name: `pretrain` trains the CLIP ViT and the LLaVA captioner into the cache, `train` then
    finds it there (nothing rebuilt) and trains its LoRA adapter."""
    from test_pretrain import TINY

    from listener_sub import cli

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    embedded = [
        "speaker=vlm", "speaker.train.steps=30", "speaker.train.scenes=64", "speaker.train.text_width=32",
        "speaker.train.text_mlp=64", "speaker.train.text_heads=2",
    ]  # fmt: skip
    common = [o for o in TINY if not o.startswith(("speaker.", "lm."))] + embedded
    cli.main(["pretrain", "stage=speaker", *common, f"hydra.run.dir={tmp_path / 'pretrain'}"])
    summary = json.loads((tmp_path / "pretrain" / "pretrain_summary.json").read_text())
    model_dir = summary["files"]["speaker"]
    assert "/vlm/llava-" in model_dir and summary["files"]["speaker.vision"].endswith(".safetensors")
    assert summary["wall_s/vlm"] > 0 and 0.0 <= summary["speaker/gap"] <= 1.0
    config = json.loads((Path(model_dir) / "config.json").read_text())
    assert config["model_type"] == "llava" and config["vision_config"]["hidden_size"] == 64
    built = (Path(model_dir) / "model.safetensors").stat().st_mtime_ns

    run = tmp_path / "run"
    cli.main(
        [
            "train",
            *common,
            "trainer.steps=1",
            "trainer.max_new_tokens=8",
            "trainer.eval_every=0",
            f"hydra.run.dir={run}",
        ]
    )
    trained = json.loads((run / "summary.json").read_text())
    assert trained["steps"] == 1 and trained["config"]["speaker"]["name"] is None
    assert (Path(model_dir) / "model.safetensors").stat().st_mtime_ns == built  # found in the cache, not rebuilt
    assert (run / "checkpoints" / "step_000001" / "lora" / "adapter_model.safetensors").is_file()
