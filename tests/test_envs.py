"""PettingZoo envs: the API tests, seeding, rendering, and agreement with the game core on the same seed."""
import functools

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test, seed_test
from pettingzoo.utils.conversions import aec_wrapper_fn
from tiny_game import one_thread, tiny_game, tiny_listeners, tiny_speaker, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.envs import ENV_ID, dixit_v0, make
from listener_sub.envs.policies import model_policies
from listener_sub.envs.render import TARGET_COLOR
from listener_sub.envs.round import SPEAKER


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="module")
def game():
    return tiny_game(tiny_listeners())


@pytest.fixture(scope="module")
def speaker(tokenizer):
    return tiny_speaker(tokenizer)


@pytest.fixture(scope="module")
def factories(game, tokenizer):
    """(AEC env(), Parallel env()) factories over the tiny game; render_mode can be passed to both."""
    return (
        functools.partial(dixit_v0.env, game=game, tokenizer=tokenizer, split="test"),
        functools.partial(dixit_v0.parallel_env, game=game, tokenizer=tokenizer, split="test"),
    )


def test_pettingzoo_api_tests(factories):
    aec, parallel = factories
    api_test(aec(), num_cycles=10)
    parallel_api_test(parallel(), num_cycles=10)
    seed_test(aec, num_cycles=10)
    parallel_seed_test(parallel, num_cycles=10)


def test_pettingzoo_render_test_every_mode(factories, capsys):
    aec, parallel = factories
    render_test(aec)
    render_test(aec_wrapper_fn(parallel))  # render_test steps AEC envs: the Parallel env through PettingZoo's converter
    assert "speaker_0" in capsys.readouterr().out  # human mode prints the transcript


def test_agents_spaces_and_observations(factories, game, tokenizer):
    env = factories[0]()
    env.reset(seed=0)
    assert env.agents == ["speaker_0", "listener_0", "listener_1", "listener_2"]
    assert env.action_space("speaker_0").nvec.tolist() == [len(tokenizer)] * 16
    assert env.action_space("listener_1").n == 4
    round_ = env.unwrapped.round
    assert np.array_equal(env.observe("speaker_0")["target"], round_.boards.target_images[0])
    before = env.observe("listener_1")  # the grayscale listener
    assert np.all(before["caption"] == tokenizer.pad_token_id)
    assert before["board"].shape == (4, 64, 64, 3) and np.all(before["board"].max(-1) - before["board"].min(-1) <= 1)
    spoken = np.array(tokenizer("a red object .", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] * 12)
    env.step(spoken)
    assert np.array_equal(env.observe("listener_0")["caption"], spoken) and round_.caption == "a red object ."
    with pytest.raises(ValueError, match="picks a position"):
        env.unwrapped.round.pick("listener_0", 7)


def play_aec(env, policies, seed):
    """One episode with the policies; returns agent -> final reward and the round's record."""
    env.reset(seed=seed)
    rewards = {}
    for agent in env.agent_iter():
        observation, reward, termination, truncation, _ = env.last()
        if termination or truncation:
            rewards[agent] = reward
            env.step(None)
        else:
            env.step(policies[agent](observation))
    return rewards, env.unwrapped.round.record()


def play_parallel(env, policies, seed):
    observations, _ = env.reset(seed=seed)
    rewards = {}
    while env.agents:
        assert env.acting_agents == (["speaker_0"] if env.round.caption is None else ["listener_0", "listener_1", "listener_2"])
        actions = {agent: policies[agent](observations[agent]) for agent in env.agents}
        observations, rewards, *_ = env.step(actions)
    return rewards, env.round.record()


def test_env_and_core_agree_on_boards_and_rewards(factories, game, speaker):
    aec, parallel = factories[0](), factories[1]()
    policies = model_policies(aec.unwrapped.round, speaker)
    for seed in range(4):
        rewards, record = play_aec(aec, policies, seed)
        boards = game.sample(1, np.random.default_rng(seed), "test")  # the core, same seed
        assert record["board"] == boards.items[0].tolist() and record["target"] == int(boards.target[0])
        caption = speaker.generate(boards.target_images, greedy=True).texts[0]
        assert record["caption"] == caption
        outcome = game.play([caption], boards)
        expected = {SPEAKER: outcome.reward.item(), **{f"listener_{i}": outcome.listener_rewards[n].item() for i, n in enumerate(game.listeners)}}
        assert rewards == pytest.approx(expected, abs=1e-6)
        assert [record["listeners"][f"listener_{i}"]["choice"] for i in range(3)] == [outcome.choices[n].item() for n in game.listeners]
        parallel_rewards, parallel_record = play_parallel(parallel, policies, seed)
        assert parallel_rewards == pytest.approx(rewards, abs=1e-6) and parallel_record == record


def test_renders_show_board_target_caption_and_picks(factories, speaker):
    env = factories[0](render_mode="rgb_array")
    policies = model_policies(env.unwrapped.round, speaker)
    _, record = play_aec(env, policies, seed=5)
    picture = env.render()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert (np.abs(picture.astype(int) - TARGET_COLOR).sum(-1) == 0).sum() > 4 * 3 * 64 * 3  # the target's frame
    text = dixit_v0._render(env.unwrapped.round, "ansi")
    assert repr(record["caption"]) in text and f"target at {record['target']}" in text
    assert f"listener_1 (gray): picks {record['listeners']['listener_1']['choice']}" in text and "rewards: speaker_0" in text


def test_registry(game, tokenizer):
    env = make(ENV_ID, game=game, tokenizer=tokenizer)
    assert isinstance(env.unwrapped, dixit_v0.raw_env) and env.unwrapped.metadata["id"] == "listener_sub/Dixit-v0"
    assert isinstance(make(ENV_ID, parallel=True, game=game, tokenizer=tokenizer), dixit_v0.parallel_raw_env)
    with pytest.raises(ValueError, match="unknown env id"):
        make("listener_sub/Dixit-v9")
    with pytest.raises(ValueError, match="this phase needs actions"):
        par = make(ENV_ID, parallel=True, game=game, tokenizer=tokenizer)
        par.reset(seed=0)
        par.step({"listener_0": 1})
