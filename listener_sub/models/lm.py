"""The speaker's causal LM: the small GPT-2's config, scene descriptions that fill its prefix, and the loader."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from listener_sub.errors import UserError

DESC_SEP = "|"  # ends the description of each object
DESC_FILL = "_"  # pads a description to exactly prefix_len tokens
DESC_ORDER = ("size", "color", "fill", "shape", "position")  # attribute order within an object's description
LOCAL_PREFIXES = ("/", "./", "../", "~")  # a name starting with one of these is a local path, never a hub name
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
)  # any one: a saved tokenizer


@dataclass
class LMConfig:
    """The embedded default's small GPT-2 (the vocabulary size comes from its trained tokenizer)."""

    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 64  # model width (what the speaker's adapter projects to)
    n_positions: int = 64  # longest sequence: prefix_len + caption tokens + EOS
    prefix_len: int = 8  # M: description tokens in pretraining = soft-prefix vectors of the speaker
    dropout: float = 0.0  # residual, embedding and attention dropout
    activation: str = "gelu_pytorch_tanh"  # GPT-2's tanh GELU as one fused kernel (same values as "gelu_new")


def object_words(obj: dict[str, str]) -> list[str]:
    """An object's value words in DESC_ORDER, then the separator."""
    return [*(obj[a] for a in DESC_ORDER if a in obj), DESC_SEP]


def describe(objects: list[dict[str, str]], prefix_len: int) -> str:
    """'large red striped circle left | _ _': the referent and as many of the other objects as fit, whole and in order,
    then filler, exactly prefix_len tokens (no objects: filler only)."""
    words: list[str] = []
    for obj in objects:
        more = object_words(obj)
        if len(words) + len(more) > prefix_len:
            if not words:
                raise ValueError(
                    f"describing one object takes {len(more)} tokens; set prefix_len >= {len(more)} (got {prefix_len})"
                )
            break
        words += more
    return " ".join(words + [DESC_FILL] * (prefix_len - len(words)))


def load_lm(name_or_dir: str, device: str = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A frozen causal LM in eval mode and its tokenizer (with EOS and pad), from a local dir or a hub name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # imported on use: it takes seconds

    source, local = _source(name_or_dir)
    try:
        with without_transformers_bars():
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as err:
        raise _unloadable(name_or_dir, err) from None
    _ensure_special_tokens(tokenizer, name_or_dir)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise UserError(
            f"the tokenizer of {name_or_dir!r} has {len(tokenizer)} tokens but the model only "
            f"{model.get_input_embeddings().num_embeddings} embeddings; save the matching tokenizer beside the model"
        )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    return model.to(device).eval(), tokenizer


@contextmanager
def without_transformers_bars() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards": drawn on every load and save of
    even a tiny LM) off inside; the hub's download bars and every logged warning stay as they were."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    bars, downloads = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # turns the hub's bars off too: they are turned back on below
    if downloads:
        enable_progress_bars()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        if not downloads:
            disable_progress_bars()


def check_lm(name_or_dir: str) -> PretrainedConfig:
    """The LM's config, read (a local directory, which must also hold tokenizer files) or fetched (a hub name: its
    config.json only, or the copy in the Hugging Face cache); UserError when there is none. Loads no weights."""
    from transformers import AutoConfig

    source, local = _source(name_or_dir)
    if local and not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"{source} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer beside the model (tokenizer.save_pretrained(dir))"
        )
    try:
        return AutoConfig.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as err:
        raise _unloadable(name_or_dir, err) from None


def lm_width(name_or_dir: str) -> int:
    """The width of the LM's input embeddings (what the speaker's adapter writes), from its config alone: the model is
    built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    config = check_lm(name_or_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config).get_input_embeddings().embedding_dim


def _source(name_or_dir: str) -> tuple[str, bool]:
    """(what transformers reads, whether it is local): a checked local directory, or a hub name as given."""
    if not _is_local(name_or_dir):
        return name_or_dir, False
    path = Path(name_or_dir).expanduser()
    _check_dir(path)
    return str(path), True


def _unloadable(name_or_dir: str, err: Exception) -> UserError:
    return UserError(
        f"cannot load the LM {name_or_dir!r} ({_first_line(err)}); pass a directory written by save_pretrained "
        "(config.json, weights and tokenizer files) or a hub model name on a machine with internet"
    )


def _is_local(name_or_dir: str) -> bool:
    """Whether a model name is a local path (it exists or is spelled as a path) rather than a hub name."""
    return Path(name_or_dir).expanduser().exists() or name_or_dir.startswith(LOCAL_PREFIXES)


def _check_dir(path: Path) -> None:
    """UserError unless `path` is a directory holding a saved model config."""
    if not path.is_dir():
        raise UserError(
            f"LM directory {path} does not exist; run `listener-sub pretrain stage=lm` or point the LM setting "
            "at a directory written by save_pretrained"
        )
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json; point the LM setting at a directory written by save_pretrained")


def _ensure_special_tokens(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Require a vocabulary and an EOS token; use EOS as the pad token when there is none (as for GPT-2)."""
    if len(tokenizer.get_vocab()) <= 1:  # transformers builds an empty tokenizer when its files are missing
        raise UserError(
            f"no tokenizer files found for the LM {name!r}; save the tokenizer beside the model "
            "(tokenizer.save_pretrained(dir))"
        )
    if tokenizer.eos_token is None:
        raise UserError(f"the tokenizer of {name!r} has no EOS token; use an LM whose tokenizer defines eos_token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _first_line(err: Exception) -> str:
    """The first line of an error message (transformers errors run to several)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
