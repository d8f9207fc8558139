"""The speaker's LM: scene descriptions, the word-level tokenizer, LM pretraining and the generic loader."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from listener_sub.errors import UserError
from listener_sub.models.lm import DESC_FILL, DESC_SEP, LMConfig, describe, load_lm
from listener_sub.pretrain.lm import (
    LMRecipe,
    build_corpus,
    caption_nll,
    corpus_mention_rates,
    encode_pairs,
    lexicon,
    make_model,
    train_lm,
    train_tokenizer,
)
from listener_sub.world import ATTRIBUTES, CaptionConfig, WorldConfig, sample_scenes

TINY = LMConfig(n_layer=1, n_head=2, n_embd=32, n_positions=32)


@pytest.fixture(scope="module")
def pairs():
    return build_corpus(WorldConfig(), CaptionConfig(), n_scenes=40, per_scene=3, prefix_len=8, seed=0)


@pytest.fixture(scope="module")
def tokenizer(pairs):
    return train_tokenizer([t for pair in pairs for t in pair])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LM trained briefly (~4 s); returns its directory."""
    out = tmp_path_factory.mktemp("lm") / "tiny"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fast for a tiny model, and immune to cores oversubscribed by other processes
    try:
        recipe = LMRecipe(steps=600, batch_size=32, lr=1e-2, n_scenes=300, per_scene=3)
        return train_lm(TINY, WorldConfig(), CaptionConfig(), out, recipe, progress=False)
    finally:
        torch.set_num_threads(threads)


def val_batches(tokenizer, n: int = 128) -> tuple:
    """Val captions with their own description and with the previous scene's description."""
    pairs = build_corpus(WorldConfig(), CaptionConfig(), n, 1, 8, seed=1)
    wrong = [(pairs[i - 1][0], caption) for i, (_, caption) in enumerate(pairs)]
    return encode_pairs(pairs, tokenizer, 8), encode_pairs(wrong, tokenizer, 8)


def test_describe_one_object_fills_prefix(tokenizer):
    objects = [{"color": "red", "shape": "circle", "size": "large", "fill": "striped", "position": "left"}]
    text = describe(objects, 8)
    assert text == f"large red striped circle left {DESC_SEP} {DESC_FILL} {DESC_FILL}"
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 8


def test_describe_three_objects_in_order(tokenizer):
    scenes = sample_scenes(WorldConfig(min_objects=3, max_objects=3), "train", 0, 5)
    for b in range(len(scenes)):
        objects = scenes.objects(b)
        for m in (18, 20):
            ids = tokenizer(describe(objects, m), add_special_tokens=False)["input_ids"]
            assert len(ids) == m and tokenizer.unk_token_id not in ids
        words = describe(objects, 18).split()
        assert words[3] == objects[0]["shape"] and words[9] == objects[1]["shape"] and words[15] == objects[2]["shape"]


def test_describe_keeps_the_objects_that_fit_and_raises_when_the_referent_does_not():
    objects = sample_scenes(WorldConfig(min_objects=3, max_objects=3), "train", 0, 1).objects(0)
    assert describe(objects, 8) == describe(objects[:1], 8)  # the referent, then filler: the next object takes 6 more
    assert describe(objects, 13).split()[:12] == describe(objects[:2], 12).split()  # two whole objects, then filler
    assert describe([], 3) == "_ _ _"
    with pytest.raises(ValueError, match="prefix_len >= 6"):
        describe(objects, 5)


def test_every_word_is_one_token_and_captions_round_trip(tokenizer, pairs):
    for word in lexicon()[:-1]:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids != [tokenizer.unk_token_id], word
    assert tokenizer.convert_ids_to_tokens(tokenizer("circle.", add_special_tokens=False)["input_ids"])[1:] == ["."]
    captions = [c for _, c in pairs] + ["a picture of a small red outlined circle to the left of an object."]
    for caption in captions:
        ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == caption
    assert tokenizer("  A small  red circle .")["input_ids"] == tokenizer("a small red circle.")["input_ids"]


def test_tokenizer_saves_and_loads_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "there is a large green object on the right."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert loaded.pad_token_id != loaded.eos_token_id


def test_encode_pairs_masks_description_and_padding(tokenizer, pairs):
    batch = encode_pairs(pairs[:8], tokenizer, 8)
    assert (batch.labels[:, :8] == -100).all()
    lengths = batch.attention_mask.sum(1)
    for i, (_, caption) in enumerate(pairs[:8]):
        n_caption = len(tokenizer(caption, add_special_tokens=False)["input_ids"])
        assert lengths[i] == 8 + n_caption + 1
        assert batch.input_ids[i, lengths[i] - 1] == tokenizer.eos_token_id
        assert (batch.labels[i, 8 : lengths[i]] == batch.input_ids[i, 8 : lengths[i]]).all()
        assert (batch.labels[i, lengths[i] :] == -100).all()


def test_corpus_mention_rates():
    pairs = [("", "a red object."), ("", "a small circle."), ("", "a red circle on the left."), ("", "a square.")]
    rates = corpus_mention_rates(pairs)
    assert set(rates) == set(ATTRIBUTES)
    assert rates == {"color": 0.5, "shape": 0.75, "size": 0.25, "fill": 0.0, "position": 0.25}


def test_trained_lm_loads_and_reads_its_description(trained):
    model, tokenizer = load_lm(str(trained))
    assert isinstance(model, GPT2LMHeadModel) and not model.training and model.config.prefix_len == 8
    assert not any(p.requires_grad for p in model.parameters())
    assert isinstance(AutoModelForCausalLM.from_pretrained(trained), GPT2LMHeadModel)
    assert AutoTokenizer.from_pretrained(trained).eos_token_id == tokenizer.eos_token_id
    right, wrong = val_batches(tokenizer)
    torch.manual_seed(0)
    untrained = make_model(TINY, tokenizer).eval()
    nll_init = caption_nll(untrained, right).mean()
    nll_right, nll_wrong = caption_nll(model, right).mean(), caption_nll(model, wrong).mean()
    assert nll_right < nll_init - 1.5
    assert nll_wrong > nll_right + 0.3, (float(nll_wrong), float(nll_right))


def test_gpt2_default_config_loads_as_speaker_lm(tokenizer, tmp_path):
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, loaded = load_lm(str(tmp_path))
    assert (model.config.n_layer, model.config.n_embd, model.config.vocab_size) == (12, 768, 50257)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert loaded.eos_token_id is not None and loaded.pad_token_id is not None
    ids = loaded("a red object.", return_tensors="pt")["input_ids"]  # (1, T)
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], 50257)


def test_loading_and_saving_draw_no_progress_bar(tokenizer, tmp_path, capsys):
    """transformers draws a bar on every load and save; the LM's are silent, and its bar setting is left as it was."""
    from transformers.utils import logging as hf_logging

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    capsys.readouterr()
    load_lm(str(tmp_path))
    assert "Loading weights" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    train_lm(TINY, WorldConfig(), CaptionConfig(), tmp_path / "trained", LMRecipe(steps=1, n_scenes=8), progress=False)
    assert "Writing" not in capsys.readouterr().err


def test_tokenizer_without_pad_gets_eos_as_pad(tokenizer, tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = tmp_path / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"pad_token": "<pad>",', ""))
    _, loaded = load_lm(str(tmp_path))
    assert loaded.pad_token == loaded.eos_token


def test_model_without_tokenizer_is_a_user_error(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2)).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="no tokenizer files"):
        load_lm(str(tmp_path))


def test_missing_lm_dir_is_a_user_error(tmp_path):
    missing = tmp_path / "no-such-lm"
    with pytest.raises(UserError, match="no-such-lm") as err:
        load_lm(str(missing))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="config.json"):
        load_lm(str(tmp_path))
