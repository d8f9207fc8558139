"""GRPO (TRL) of a vision-language model's LoRA against the colour-blind game, then `listener-sub eval` of the LoRA.

The reward is listener subtraction (`listener_sub.integrations.trl`): its intended and subtracted terms as two TRL
reward functions, weighed 1 and 1 (their sum is the game's reward). The LoRA sits where the VLM speaker kind puts it
(`speaker.lora_r`, `speaker.target_modules` of the language model), so `listener-sub eval` reads the folder written
here like a LoRA trained by `listener-sub train speaker=vlm`:

    pip install "listener-sub[trl]"
    python examples/trl_grpo.py --out grpo_run                    # the embedded VLM (built first if missing)
    python examples/trl_grpo.py --out grpo_run --model HuggingFaceTB/SmolVLM-256M-Instruct   # a hub VLM, on a GPU
    listener-sub eval speaker=vlm checkpoint=grpo_run/lora        # speaker.name=MODEL for a model given by --model
    python examples/trl_grpo.py --out grpo_run experiment=knowledge_limited   # overrides: another game
    listener-sub eval speaker=vlm checkpoint=grpo_run/lora evaluation.split=shifted   # zero-shot transfer
    listener-sub rollout speaker=vlm checkpoint=grpo_run/lora     # PettingZoo episodes played by it
    listener-sub inspect run=RUN checkpoint=grpo_run/lora         # RUN: a `listener-sub train speaker=vlm` run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import listener_sub as ls
from listener_sub.integrations.trl import ListenerSubtractionRewards, boards_dataset, with_chat_template
from listener_sub.models.vlm import VLMConfig, lora_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where TRL writes; the LoRA goes to OUT/lora")
    parser.add_argument("--model", help="a hub id or save_pretrained directory (default: the embedded VLM)")
    parser.add_argument("--steps", type=int, default=200, help="GRPO steps")
    parser.add_argument("--boards", type=int, default=8, help="boards a step (prompts)")
    parser.add_argument("--generations", type=int, default=4, help="captions sampled per board")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the LoRA weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="config overrides of the game, as for listener-sub eval")
    args = parser.parse_args()

    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    overrides = ["speaker=vlm", *([f"speaker.name={args.model}"] if args.model else []), *args.overrides]
    players = ls.default_players(overrides)  # the colour-blind game; its VLM speaker names the model's directory
    name = players.speaker.config.name
    model = AutoModelForImageTextToText.from_pretrained(name)
    processor = with_chat_template(AutoProcessor.from_pretrained(name))  # TRL needs one; the speaker's prompt
    lora = VLMConfig()  # the VLM speaker kind's LoRA: rank, scale and modules, so that `listener-sub eval` reads it
    peft_config = LoraConfig(
        r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
        target_modules=lora_targets(model, lora.target_modules),
    )  # fmt: skip
    train = boards_dataset(players.game, args.boards * args.steps, split="train", seed=args.seed, prompt=lora.prompt)
    rewards = ListenerSubtractionRewards(players.game)
    config = GRPOConfig(
        output_dir=str(args.out), max_steps=args.steps, per_device_train_batch_size=args.boards * args.generations,
        num_generations=args.generations, max_completion_length=16, learning_rate=args.lr, beta=0.05,
        reward_weights=[1.0, 1.0], logging_steps=10, save_strategy="no", report_to=[], seed=args.seed,
        bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, processing_class=processor, args=config, train_dataset=train, peft_config=peft_config,
        reward_funcs=[rewards.intended_reward, rewards.subtracted_reward],
    )  # fmt: skip
    trainer.train()
    trainer.model.save_pretrained(args.out / "lora")
    print(f"wrote {args.out / 'lora'}; evaluate it: listener-sub eval speaker=vlm checkpoint={args.out / 'lora'}")


if __name__ == "__main__":
    main()
