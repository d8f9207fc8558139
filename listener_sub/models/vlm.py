"""A Hugging Face vision-language model as the speaker: `AutoModelForImageTextToText` + `AutoProcessor`, a prompt (the
chat template where the processor has one), LoRA adapters (peft) on the language model's named modules.

The base model is frozen; only the LoRA weights train. The reference policy for the KL is the same model with the
adapter disabled (`adapt(inputs, reference_policy())`), so no second copy is kept. Captions are decoded with a KV cache
by the same loop as the adapter speaker's (`decode_with_cache`); a teacher-forced pass over [prompt; caption] gives
their log-probs.
Only the LoRA weights are saved (safetensors + peft's adapter_config.json), with the base model's fingerprint, so an
adapter trained for another base model is refused.

    speaker = create_vlm_speaker("HuggingFaceTB/SmolVLM-256M-Instruct", device="cuda")
    inputs = speaker.encode(images)  # (B, H, W, 3) uint8 -> the prompt and pixels, once per image
    prompt = speaker.adapt(inputs)  # read by the model with its adapter (adapt(inputs, reference_policy()): without)
    gen = speaker.sample(prompt, k=4, max_new_tokens=16)  # 4 captions per image with token log-probs
    logp, mask = speaker.log_probs(prompt, gen.tokens, gen.lengths, k=4)  # with grad to LoRA
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from listener_sub.adapters.io import LORA_DIR, LORA_WEIGHTS
from listener_sub.draws import uniforms
from listener_sub.errors import DataError
from listener_sub.files import atomic_path, config_key
from listener_sub.images import Images, to_float_images, to_uint8_images
from listener_sub.models.precision import autocast
from listener_sub.models.speaker import Generation, cache_argument, check_sampling, decode_with_cache, length_mask

BASE_FILE = "base_model.json"  # which base model the adapter was trained for (name and config fingerprint)


@dataclass
class VLMConfig:
    """A VLM speaker's model, what it is asked, and where its LoRA adapters sit (fields of the speaker=vlm node)."""

    name: str = "???"  # a hub id or a save_pretrained directory with the model and its processor
    prompt: str = "Describe the image in a few words."  # the user's turn (through the chat template, if any)
    lora_r: int = 8  # LoRA rank
    lora_alpha: float = 16.0  # LoRA scale numerator (scale = alpha / r)
    lora_dropout: float = 0.0  # 0: the sampled and the scored policy are the same
    # module names (the last part) in the language model that get LoRA adapters
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class VLMInputs:
    """What the model reads before the caption: the prompt's token ids and the processor's image tensors."""

    input_ids: torch.Tensor  # (B, P) the prompt with its image tokens
    attention_mask: torch.Tensor  # (B, P)
    pixels: dict[str, torch.Tensor]  # pixel_values (B, ...) and any other image tensor of the processor

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, rows: Any) -> VLMInputs:
        return VLMInputs(self.input_ids[rows], self.attention_mask[rows], {k: v[rows] for k, v in self.pixels.items()})

    def repeat(self, k: int) -> VLMInputs:
        """Each row k times in a row (row b * k + j is row b), the order of `sample(..., k)`."""
        return VLMInputs(
            self.input_ids.repeat_interleave(k, 0),
            self.attention_mask.repeat_interleave(k, 0),
            {key: value.repeat_interleave(k, 0) for key, value in self.pixels.items()},
        )

    @staticmethod
    def cat(parts: list[VLMInputs]) -> VLMInputs:
        keys = parts[0].pixels
        return VLMInputs(
            torch.cat([p.input_ids for p in parts]),
            torch.cat([p.attention_mask for p in parts]),
            {key: torch.cat([p.pixels[key] for p in parts]) for key in keys},
        )


@dataclass
class VLMPrompt:
    """What a VLM speaker samples from and scores: the inputs, and the policy that reads them (the model, perhaps
    wrapped in DistributedDataParallel; None: the reference, the adapter disabled). The adapter speaker's soft prefix
    plays this part for it."""

    inputs: VLMInputs
    policy: nn.Module | None

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, rows: Any) -> VLMPrompt:
        return VLMPrompt(self.inputs[rows], self.policy)

    def repeat_interleave(self, k: int, dim: int = 0) -> VLMPrompt:
        """Each row k times in a row (rows only: `dim` must be 0), as for the adapter speaker's prefix tensor."""
        if dim != 0:
            raise ValueError("a VLM prompt repeats along its rows only (dim=0)")
        return VLMPrompt(self.inputs.repeat(k), self.policy)

    def detach(self) -> VLMPrompt:
        return self

    @staticmethod
    def cat(parts: list[VLMPrompt]) -> VLMPrompt:
        return VLMPrompt(VLMInputs.cat([p.inputs for p in parts]), parts[0].policy)


class AdapterDisabled(nn.Module):
    """The VLM speaker's reference policy: the same model with its LoRA adapter disabled (no second copy)."""


def language_model_name(model: nn.Module) -> str:
    """The qualified name of the model's language model (its decoder), e.g. "model.language_model"."""
    decoder = model.get_decoder()
    return next(name for name, module in model.named_modules() if module is decoder)


def lora_targets(model: nn.Module, names: list[str]) -> list[str]:
    """The qualified names of the language model's modules whose last name part is in `names` (ValueError when a name
    matches none: the model lacks it)."""
    prefix = language_model_name(model)
    found = [n for n, m in model.named_modules() if n.startswith(prefix + ".") and isinstance(m, nn.Linear)]
    missing = [t for t in names if not any(n.rsplit(".", 1)[-1] == t for n in found)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n in found})
        raise ValueError(
            f"the language model has no linear module(s) named {missing}; its linear modules: {', '.join(linear)}"
        )
    return [n for n in found if n.rsplit(".", 1)[-1] in names]


def base_fingerprint(model: nn.Module) -> str:
    """A key of the base model's config (architecture, sizes, vocabulary), independent of where it was loaded from."""
    config = model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        config.pop(key, None)
    return config_key(config)


class VLMSpeaker(nn.Module):
    """A vision-language model with LoRA adapters in its language model; the base weights frozen."""

    def __init__(self, model: nn.Module, processor: Any, config: VLMConfig) -> None:
        """`model`: a peft model over an AutoModelForImageTextToText (see `create_vlm_speaker`)."""
        super().__init__()
        self.model, self.processor, self.config = model, processor, config
        self.tokenizer = processor.tokenizer
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the VLM's tokenizer needs an eos token")
        self.eos_id = int(self.tokenizer.eos_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id)
        self.vocab_size = len(self.tokenizer)
        # the policy never says a special token but EOS: an image token in a caption would read as a place for an image
        banned = sorted(set(self.tokenizer.all_special_ids) - {self.eos_id})
        self.register_buffer("banned", torch.tensor(banned, dtype=torch.long), persistent=False)
        self.cache_arg = cache_argument(self.model.get_base_model())
        self.prompt = prompt_text(processor, config.prompt)
        self.fingerprint = base_fingerprint(self.model.get_base_model())
        self.model.eval()

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def trainable(self) -> nn.Module:
        """What trains (its parameters that require grad: the LoRA weights) and what DistributedDataParallel wraps."""
        return self.model

    def reference_policy(self) -> nn.Module:
        """The frozen reference for the KL: the model with its adapter disabled."""
        return AdapterDisabled()

    def adapt(self, inputs: VLMInputs, policy: nn.Module | None = None) -> VLMPrompt:
        """The inputs as read by `policy`: the speaker's own model by default, a DistributedDataParallel wrapper of it,
        or the reference (`reference_policy()`)."""
        if isinstance(policy, AdapterDisabled):
            return VLMPrompt(inputs, None)
        return VLMPrompt(inputs, self.model if policy is None else policy)

    def train(self, mode: bool = True) -> VLMSpeaker:
        """The whole model stays in eval mode (no dropout): the sampled and the scored policy are the same."""
        super().train(mode)
        self.model.eval()
        return self

    def _autocast(self) -> AbstractContextManager:
        return autocast(self.device)

    @torch.no_grad()
    def encode(self, images: Images) -> VLMInputs:
        """The frozen inputs of the images, the counterpart of the adapter speaker's vision features: the prompt and
        each image as the processor prepares them (one image per row)."""
        pixels = torch.as_tensor(images)
        if pixels.is_floating_point():  # (B, 3, H, W) in [0, 1]
            pixels = torch.from_numpy(to_uint8_images(pixels))
        to_float_images(pixels)  # checks the shape: (B, H, W, 3) uint8
        pixels = pixels.cpu().numpy()
        batch = self.processor(
            text=[self.prompt] * len(pixels), images=[[image] for image in pixels], return_tensors="pt"
        )
        ids, mask = batch.pop("input_ids"), batch.pop("attention_mask")
        return VLMInputs(
            ids.to(self.device), mask.to(self.device), {k: v.to(self.device) for k, v in batch.items() if v is not None}
        )

    def _forward(
        self,
        policy: nn.Module | None,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pixels: dict[str, torch.Tensor],
        **kwargs: Any,
    ) -> Any:
        """The model's forward pass by `policy`: the model or a DistributedDataParallel wrapper of it; None: the
        reference, the base model (the adapter disabled)."""
        reference = self.model.disable_adapter() if policy is None else nullcontext()
        with self._autocast(), reference:
            return (policy or self.model)(input_ids=ids, attention_mask=mask, **pixels, **kwargs)

    def policy_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., V') model logits -> (..., V) float logits of the policy: the tokenizer's tokens, special ones but EOS
        masked out."""
        logits = logits[..., : self.vocab_size].float()
        return logits.index_fill(-1, self.banned.to(logits.device), float("-inf"))

    def log_probs(
        self, prompt: VLMPrompt, tokens: torch.Tensor, lengths: torch.Tensor, k: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's policy teacher-forced over [prompt; tokens], k captions per row of the prompt (caption row
        b * k + j after prompt b): (log pi of each token (N, L), float mask (N, L)), N = B * k; tokens up to and
        including EOS count.

        Each prompt and image is read once and its keys and values are shared by its k captions, as in sampling --
        unless the policy is a DistributedDataParallel wrapper, which must run once a step with gradients: then the
        prompt is repeated for the k captions in one pass."""
        tokens, lengths = tokens.to(self.device), lengths.to(self.device)
        L = tokens.shape[1]
        mask = length_mask(lengths, L)  # (N, L)
        one_pass = isinstance(prompt.policy, nn.parallel.DistributedDataParallel) and torch.is_grad_enabled()
        if k > 1 and not one_pass:
            logits = self._shared_prompt_logits(prompt, tokens, mask, k)  # (N, L, V')
        else:
            inputs = prompt.repeat_interleave(k).inputs if k > 1 else prompt.inputs
            P = inputs.input_ids.shape[1]
            ids = torch.cat([inputs.input_ids, tokens], 1)  # (N, P + L)
            attention = torch.cat([inputs.attention_mask, mask.long()], 1)  # (N, P + L)
            out = self._forward(prompt.policy, ids, attention, inputs.pixels, use_cache=False)
            logits = out.logits[:, P - 1 : P + L - 1]  # (N, L, V') position P-1+t predicts token t
        logp = self.policy_logits(logits).log_softmax(-1)  # (N, L, V)
        per_token = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (N, L); -inf at the pad after EOS
        return per_token.masked_fill(mask == 0, 0.0), mask

    def _shared_prompt_logits(
        self, prompt: VLMPrompt, tokens: torch.Tensor, mask: torch.Tensor, k: int
    ) -> torch.Tensor:
        """Logits (N, L, V') predicting each caption token (N, L), N = B * k: the B prompts read once, their keys and
        values repeated for k captions each, then the captions read through that cache."""
        inputs, policy = prompt.inputs, prompt.policy
        P, L = inputs.input_ids.shape[1], tokens.shape[1]
        first, cache = self._read_prompt(prompt, k)  # (N, 1, V') predicts token 0
        if L == 1:
            return first
        attention = torch.cat([inputs.attention_mask.repeat_interleave(k, 0), mask.long()], 1)  # (N, P + L)
        rest = self._forward(
            policy, tokens[:, :-1], attention[:, : P + L - 1], {}, use_cache=True, **{self.cache_arg: cache}
        )  # (N, L - 1, V') position t predicts token t + 1
        return torch.cat([first, rest.logits], 1)

    def _read_prompt(self, prompt: VLMPrompt, k: int) -> tuple[torch.Tensor, Any]:
        """The policy reads each prompt and image once: the logits of its last position (N, 1, V'), N = B * k, and its
        KV cache, both repeated for k captions (row b * k + j is prompt b)."""
        inputs = prompt.inputs
        out = self._forward(
            prompt.policy, inputs.input_ids, inputs.attention_mask, inputs.pixels, use_cache=True, logits_to_keep=1
        )
        cache = getattr(out, self.cache_arg)
        cache.batch_repeat_interleave(k)  # (N, heads, P, d_head) per layer
        return out.logits[:, -1:].repeat_interleave(k, 0), cache

    @torch.no_grad()
    def sample(
        self,
        prompt: VLMPrompt,
        k: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        draws: torch.Tensor | None = None,
    ) -> Generation:
        """k captions per row of the prompt (row b * k + j) by its policy, decoded with a KV cache at `temperature`
        after top-k / top-p filtering, or greedy; token t of row i drawn with draws[i, t] ((B*k, max_new_tokens)
        uniform numbers, from `generator` when not given). The model reads each prompt and image once; its keys and
        values are repeated for the k captions."""
        check_sampling(k, temperature, top_k, top_p, max_new_tokens, greedy)
        inputs, policy = prompt.inputs, prompt.policy
        B, P = inputs.input_ids.shape
        if draws is None and not greedy:
            draws = uniforms(B * k, max_new_tokens, generator, self.device)  # (B*k, max_new_tokens)
        attention = torch.cat(
            [inputs.attention_mask, inputs.attention_mask.new_ones(B, max_new_tokens)], 1
        ).repeat_interleave(k, 0)  # (B*k, P + max_new_tokens)
        first, cache = self._read_prompt(prompt, k)  # (N, 1, V')

        def step(token: torch.Tensor, t: int) -> torch.Tensor:
            out = self._forward(
                policy, token[:, None], attention[:, : P + t + 1], {}, use_cache=True, **{self.cache_arg: cache}
            )
            return self.policy_logits(out.logits[:, -1])  # (N, V)

        first = self.policy_logits(first[:, -1])  # (N, V)
        tokens, lengths, log_probs = decode_with_cache(
            first, step, max_new_tokens, None if greedy else draws, self.eos_id, self.pad_id,
            temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
        )  # fmt: skip
        return Generation(tokens, lengths, self.decode(tokens, lengths), log_probs)

    @torch.no_grad()
    def text_log_probs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of captions (N, L) under the base model reading text alone (no image; the adapter disabled),
        after its BOS token (EOS where it has none): the caption's fluency as text."""
        bos = self.tokenizer.bos_token_id
        context = torch.full((len(tokens), 1), self.eos_id if bos is None else int(bos), device=self.device)
        empty = VLMInputs(context, torch.ones_like(context), {})
        return self.log_probs(VLMPrompt(empty, None), tokens, lengths)

    @torch.no_grad()
    def generate(self, images: Images, k: int = 1, **settings: Any) -> Generation:
        """k captions per image (row b * k + j), `sample`'s settings."""
        return self.sample(self.adapt(self.encode(images)), k, **settings)

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Token rows (N, L) cut at their lengths -> text without special tokens."""
        rows = [row[:n].tolist() for row, n in zip(tokens.cpu(), lengths.tolist())]
        return [" ".join(text.split()) for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def save_adapter(self, folder: str | Path) -> Path:
        """Only the LoRA weights (peft's safetensors and config) and the base model's fingerprint, into `folder`,
        atomically."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder = Path(folder)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
            save_file(state, tmp / LORA_WEIGHTS)
            self.model.peft_config["default"].save_pretrained(tmp)
            (tmp / BASE_FILE).write_text(json.dumps({"name": self.config.name, "fingerprint": self.fingerprint}))
        return folder

    def save_trainable(self, folder: Path) -> None:
        """The trainable part into a checkpoint folder: the LoRA adapter as `LORA_DIR/`."""
        self.save_adapter(folder / LORA_DIR)

    def load_trainable(self, folder: Path) -> None:
        """The LoRA adapter of a checkpoint folder, loaded in place."""
        self.load_adapter(folder / LORA_DIR)

    def load_adapter(self, folder: str | Path) -> None:
        """Load LoRA weights saved by `save_adapter` (or by peft for this base model); DataError when they were trained
        for another base model or do not fit this one."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(folder)
        if folder.is_file():  # its weights file named: the folder is what holds the adapter
            folder = folder.parent
        if not (folder / LORA_WEIGHTS).is_file():
            raise DataError(f"{folder} holds no {LORA_WEIGHTS}; pass a LoRA adapter folder (save_adapter, peft)")
        base = folder / BASE_FILE
        if base.is_file():
            saved = json.loads(base.read_text())
            if saved["fingerprint"] != self.fingerprint:
                raise DataError(
                    f"the LoRA adapter {folder} was trained for the base model {saved['name']}, not for "
                    f"{self.config.name}; use it with speaker.name={saved['name']} or pass an adapter of this model"
                )
        state = load_file(folder / LORA_WEIGHTS, device=str(self.device))
        own = {k: v.shape for k, v in get_peft_model_state_dict(self.model).items()}
        bad = [k for k, v in state.items() if k not in own or tuple(v.shape) != tuple(own[k])]
        if bad or len(state) != len(own):
            raise DataError(
                f"the LoRA adapter {folder} does not fit {self.config.name} ({len(bad)} of its {len(state)} tensors "
                f"are not this model's LoRA weights, {len(own)} expected); pass an adapter trained with the same "
                "speaker.lora_r and target_modules"
            )
        set_peft_model_state_dict(self.model, state)


def prompt_text(processor: Any, prompt: str) -> str:
    """The prompt with one image: through the processor's chat template where it has one, else the image token and the
    prompt."""
    image_token = getattr(processor, "image_token", None)
    if image_token is None:
        raise ValueError("the processor has no image token (processor.image_token); it cannot place an image")
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"{image_token}{prompt}"


def check_vlm(config: VLMConfig, max_new_tokens: int) -> str | None:
    """What makes a VLM speaker setting unusable, in one line (None: nothing), from the model's config and processor
    alone -- the model is built on the meta device, no weights are read: an unknown model type, a processor without
    an image token, LoRA target modules the language model lacks, a prompt that leaves no room for the caption."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if str(config.name).startswith(("/", ".", "~")) and not Path(config.name).expanduser().is_dir():
        return f"speaker.name={config.name} is not a directory; pass a hub id or a save_pretrained directory"
    try:
        model_config = AutoConfig.from_pretrained(config.name)
    except (OSError, ValueError) as error:
        return f"speaker.name={config.name}: no model config there ({str(error).splitlines()[0]})"
    kind = model_config.model_type
    if kind not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return (
            f"speaker.name={config.name} is a {kind!r} model, not an image-text-to-text model "
            "(AutoModelForImageTextToText: llava, idefics3, smolvlm, qwen2_vl, paligemma, gemma3, ...)"
        )
    try:
        processor = AutoProcessor.from_pretrained(config.name)
        prompt = prompt_text(processor, config.prompt)
    except (OSError, ValueError, TypeError) as error:
        return f"speaker.name={config.name}: its processor cannot make the prompt ({str(error).splitlines()[0]})"
    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(model_config)
    try:
        lora_targets(skeleton, list(config.target_modules))
    except ValueError as error:
        return f"speaker.target_modules={list(config.target_modules)}: {error}"
    image = torch.zeros(1, 64, 64, 3, dtype=torch.uint8).numpy()
    length = processor(text=[prompt], images=[[image[0]]], return_tensors="pt")["input_ids"].shape[1]
    text = model_config.get_text_config()
    context = getattr(text, "max_position_embeddings", None)
    if context is not None and length + max_new_tokens > context:
        return (
            f"speaker.prompt: the prompt with its image takes {length} tokens and a caption up to "
            f"{max_new_tokens} more, past the model's context of {context}; shorten the prompt or lower "
            "trainer.max_new_tokens"
        )
    return None


def create_vlm_speaker(
    name: str,
    prompt: str = VLMConfig.prompt,
    device: str | torch.device = "cpu",
    adapter: str | Path | None = None,
    seed: int = 0,
    **lora: Any,
) -> VLMSpeaker:
    """A VLM speaker: the model and processor from a hub id or a save_pretrained directory, fresh LoRA adapters (`lora`:
    VLMConfig's lora_r, lora_alpha, lora_dropout, target_modules; initialised from `seed` on a forked RNG) or those
    saved at `adapter`; bf16 weights on CUDA, fp32 on the CPU."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    config = VLMConfig(name=str(name), prompt=prompt, **lora)
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    processor = AutoProcessor.from_pretrained(name)
    base.requires_grad_(False)
    lora_config = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=lora_targets(base, list(config.target_modules)),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, lora_config)
    speaker = VLMSpeaker(model.to(device), processor, config)
    if adapter is not None:
        speaker.load_adapter(adapter)
    return speaker
