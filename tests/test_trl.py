"""The TRL bridge: boards as a datasets.Dataset (the evaluation's boards), reward functions that follow TRL's contract
and give `Game.play`'s numbers, and GRPOTrainer training a tiny VLM's LoRA on CPU with them."""

import numpy as np
import pytest
import torch
from tiny_game import one_thread, tiny_game, tiny_listeners  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.evaluation import EvalConfig, held_out_boards
from listener_sub.game import Boards
from listener_sub.rewards import Reward

pytest.importorskip("trl")
from listener_sub.integrations.trl import ListenerSubtractionRewards, boards_dataset, completion_text  # noqa: E402


@pytest.fixture(scope="module")
def game():
    return tiny_game(tiny_listeners())


def columns(dataset) -> dict:
    return {c: dataset[c] for c in ("board_split", "board_items", "board_target", "board_index")}


def test_the_dataset_holds_the_evaluations_boards(game):
    data = boards_dataset(game, 6, split="test", seed=3)
    boards = held_out_boards(game, EvalConfig(boards=6, split="test", seed=3))
    assert data["board_items"] == boards.items.tolist() and data["board_target"] == boards.target.tolist()
    assert data["board_split"] == ["test"] * 6
    assert np.array_equal(np.stack([np.asarray(image) for image in data["image"]]), boards.target_images)
    assert (
        data["prompt"][0][0]["content"][0] == {"type": "image", "text": None}
        or data["prompt"][0][0]["content"][0]["type"] == "image"
    )
    with_board = boards_dataset(game, 2, split="test", seed=3, board_images=True, conversational=False)
    assert with_board["prompt"] == ["Describe the image in a few words."] * 2
    assert np.array_equal(np.asarray(with_board["images"][1][2]), boards.images[1, 2])


def test_the_rewards_are_the_games_numbers_and_sum_to_its_reward(game):
    data = boards_dataset(game, 5, split="test", seed=1)
    captions = ["a red circle .", "a blue square .", "the green object .", "a big thing .", "red"]
    completions = [[{"role": "assistant", "content": c}] for c in captions]  # conversational, as TRL passes them
    metrics, extras = {}, {}
    kwargs = columns(data) | {"log_metric": metrics.__setitem__, "log_extra": extras.__setitem__}
    rewards = ListenerSubtractionRewards(game)
    combined = rewards.listener_subtraction_reward(data["prompt"], completions, completion_ids=[[1]] * 5, **kwargs)
    intended = rewards.intended_reward(data["prompt"], completions, **kwargs)
    subtracted = rewards.subtracted_reward(data["prompt"], completions, **kwargs)

    outcome = game.play(captions, held_out_boards(game, EvalConfig(boards=5, split="test", seed=1)))
    assert combined == pytest.approx(outcome.reward.tolist(), abs=1e-6)
    assert np.add(intended, subtracted) == pytest.approx(combined, abs=1e-6)
    assert metrics["listener_sub/gap"] == pytest.approx(outcome.gap.float().mean().item())
    for name, right in outcome.correct.items():
        assert metrics[f"listener_sub/acc/{name}"] == pytest.approx(right.float().mean().item())
        assert extras[f"listener_sub/pick/{name}"] == outcome.choices[name].tolist()

    # a row without a board gets None; plain-text completions work the same
    partial = columns(data) | {"board_split": ["test"] * 4 + [None]}
    plain = rewards.listener_subtraction_reward(data["prompt"], captions, **partial)
    assert plain[:4] == pytest.approx(combined[:4], abs=1e-6) and plain[4] is None
    with pytest.raises(KeyError, match="board_items"):
        rewards.listener_subtraction_reward(data["prompt"], captions, board_split=["test"] * 5)


def test_the_dixit_score_has_no_terms_and_the_parts_weigh_lam(game):
    data = boards_dataset(game, 3, split="test", seed=2)
    captions = ["a red circle .", "a blue square .", "a thing ."]
    dixit = tiny_game(game.listeners, Reward({"full": 1.0}, {"gray": 1.0}, score="dixit"))
    rewards = ListenerSubtractionRewards(dixit)
    assert rewards.intended_reward([], captions, **columns(data)) == [None] * 3
    heavy = ListenerSubtractionRewards(tiny_game(game.listeners, Reward({"full": 1.0}, {"gray": 1.0}, lam=2.0)))
    light = ListenerSubtractionRewards(tiny_game(game.listeners, Reward({"full": 1.0}, {"gray": 1.0}, lam=1.0)))
    assert heavy.subtracted_reward([], captions, **columns(data)) == pytest.approx(
        [2 * r for r in light.subtracted_reward([], captions, **columns(data))]
    )
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": " a  red "}]}]) == "a red"


@pytest.mark.parametrize("kind", ["GRPO", "RLOO"])
def test_trl_trains_a_tiny_vlms_lora_with_the_games_rewards(game, tmp_path, kind):
    """GRPOTrainer and RLOOTrainer, a few steps on CPU: a tiny random LLaVA with LoRA, this reward; every reward TRL
    logged is `Game.play`'s on the same board and caption."""
    import trl
    from peft import LoraConfig
    from tiny_vlms import save_llava
    from transformers import AutoModelForImageTextToText, AutoProcessor

    Config, Trainer = getattr(trl, f"{kind}Config"), getattr(trl, f"{kind}Trainer")

    path = save_llava(tmp_path / "llava")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    data = boards_dataset(game, 8, split="train", seed=0, prompt="describe the image")
    rewards = ListenerSubtractionRewards(game)
    args = Config(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
        max_steps=2, learning_rate=1e-3, logging_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
        log_completions=False, seed=0, reward_weights=[1.0, 1.0],
    )  # fmt: skip
    trainer = Trainer(
        model=model, processing_class=processor, args=args, train_dataset=data,
        reward_funcs=[rewards.intended_reward, rewards.subtracted_reward],
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )  # fmt: skip
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()

    logs = trainer._logs  # the latest generation batch: completions, each reward function's rewards, extra columns
    completions = [completion_text(c) for c in logs["completion"]]
    board_index = list(logs["extra"]["listener_sub/board"])
    assert len(completions) == len(board_index) == 4
    rows = data.select(board_index)
    boards = Boards(np.array(rows["board_items"]), np.array(rows["board_target"]), game.pool("train"))
    outcome = game.play(completions, boards)
    logged = np.add(logs["rewards"]["intended_reward"], logs["rewards"]["subtracted_reward"])
    assert logged == pytest.approx(outcome.reward.tolist(), abs=1e-5)
    assert list(logs["extra"]["listener_sub/pick/gray"]) == outcome.choices["gray"].tolist()
    assert any("listener_sub/gap" in entry for entry in trainer.state.log_history)
    moved = [n for n, p in trainer.model.named_parameters() if "lora_B" in n and not torch.equal(p, lora_before[n])]
    assert moved  # LoRA trained


def test_a_processor_without_a_chat_template_gets_the_speakers_prompt(tmp_path):
    """TRL needs conversational prompts; a processor without a chat template renders them as the VLM speaker does."""
    from tiny_vlms import save_llava
    from transformers import AutoProcessor

    from listener_sub.integrations.trl import with_chat_template
    from listener_sub.models.vlm import prompt_text

    processor = AutoProcessor.from_pretrained(save_llava(tmp_path / "llava"))
    processor.chat_template = None
    speaker_prompt = prompt_text(processor, "describe the image")  # no template: the image token, then the text
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe the image"}]}]
    assert with_chat_template(processor).apply_chat_template(turn, add_generation_prompt=True) == speaker_prompt


@pytest.mark.slow
def test_the_grpo_example_writes_a_lora_that_listener_sub_eval_reads(warm_cache, tmp_path):
    """examples/trl_grpo.py on the session's tiny listeners and a tiny embedded VLM: GRPO writes a LoRA folder, and
    `listener-sub eval speaker=vlm checkpoint=` scores it like a LoRA trained by `listener-sub train`."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_pretrain import TINY

    game = [o for o in TINY if not o.startswith(("speaker.", "lm."))] + [
        "speaker.train.steps=20", "speaker.train.scenes=64", "speaker.train.text_width=32", "speaker.train.text_mlp=64",
        "speaker.train.text_heads=2",
    ]  # fmt: skip
    example = Path(__file__).resolve().parent.parent / "examples" / "trl_grpo.py"
    out = tmp_path / "grpo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--out", str(out), "--steps", "2", "--boards", "2", "--generations", "2", *game]
    ran = subprocess.run([sys.executable, str(example), *args], capture_output=True, text=True, timeout=900, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    command = ["eval", "speaker=vlm", f"checkpoint={out / 'lora'}", *game, f"hydra.run.dir={tmp_path / 'eval'}"]
    ran = subprocess.run([sys.executable, "-m", "listener_sub", *command], capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    after = json.loads((tmp_path / "eval" / "summary.json").read_text())["after"]
    assert 0.0 <= after["acc/full"] <= 1.0 and "gap" in after
