"""PettingZoo envs: the API tests, seeding, rendering, and agreement with the game core on the same seed."""

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    spoken = np.array(
        tokenizer("a red object .", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] * 12
    )
    env.step(spoken)
    assert np.array_equal(env.observe("listener_0")["caption"], spoken) and round_.caption == "a red object ."
    with pytest.raises(ValueError, match="picks one integer position"):
        env.unwrapped.round.pick("listener_0", 7)


SPOKEN = [1] * 16  # token ids of a caption (the tiny tokenizer's id 1, 16 times)


@pytest.mark.parametrize("pick", [2.0, 2.7, np.float32(1.0), np.array([1]), np.array([[1]]), True, -1, 4, "1"])
def test_a_bad_pick_is_refused_through_either_env_never_truncated(factories, pick):
    parallel = factories[1]()
    parallel.reset(seed=0)
    parallel.step({SPEAKER: np.array(SPOKEN)})
    good = {agent: 0 for agent in parallel.acting_agents}
    with pytest.raises(ValueError, match="picks one integer position in \\[0, 4\\)"):
        parallel.step(good | {"listener_1": pick})
    aec = dixit_v0.raw_env(**factories[0].keywords)
    aec.reset(seed=0)
    aec.step(np.array(SPOKEN))
    with pytest.raises(ValueError, match="picks one integer position"):
        aec.step(pick)
    with pytest.raises((AssertionError, ValueError)):  # the wrapper's bounds check, or (a bool is an int to it) the env
        wrapped = factories[0]()
        wrapped.reset(seed=0)
        wrapped.step(np.array(SPOKEN))
        wrapped.step(pick)


@pytest.mark.parametrize(
    "tokens",
    [
        np.array(SPOKEN, dtype=np.float64),
        np.array(SPOKEN[:5]),
        np.array([SPOKEN]),
        np.array([-1] * 16),
        np.array([10**6] * 16),
    ],
)
def test_a_bad_caption_is_refused(factories, tokens):
    parallel = factories[1]()
    parallel.reset(seed=0)
    with pytest.raises(ValueError, match="the speaker acts with 16 integer token ids"):
        parallel.step({SPEAKER: tokens})


def test_no_step_after_the_episode_ends_or_before_it_begins(factories):
    parallel = factories[1]()
    with pytest.raises(ValueError, match="no episode is running"):
        parallel.step({SPEAKER: np.array(SPOKEN)})
    parallel.reset(seed=0)
    parallel.step({SPEAKER: np.array(SPOKEN)})
    _, rewards, done, _, _ = parallel.step(dict.fromkeys(parallel.acting_agents, 0))
    assert all(done.values()) and not parallel.agents
    with pytest.raises(ValueError, match="no episode is running"):
        parallel.step(dict.fromkeys(["listener_0", "listener_1", "listener_2"], 1))  # not scored again
    assert parallel.round.rewards() == rewards
    aec = dixit_v0.raw_env(**factories[0].keywords)
    aec.reset(seed=0)
    for action in [np.array(SPOKEN), 0, 0, 0]:
        aec.step(action)
    with pytest.raises(ValueError, match="the only valid action is None"):  # PettingZoo's dead step
        aec.step(1)
    with pytest.raises(ValueError, match="this round is over"):
        aec.round.pick("listener_0", 1)


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
        assert env.acting_agents == (
            ["speaker_0"] if env.round.caption is None else ["listener_0", "listener_1", "listener_2"]
        )
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
        expected = {
            SPEAKER: outcome.reward.item(),
            **{f"listener_{i}": outcome.listener_rewards[n].item() for i, n in enumerate(game.listeners)},
        }
        assert rewards == pytest.approx(expected, abs=1e-6)
        assert [record["listeners"][f"listener_{i}"]["choice"] for i in range(3)] == [
            outcome.choices[n].item() for n in game.listeners
        ]
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
    assert (
        f"listener_1 (gray): picks {record['listeners']['listener_1']['choice']}" in text
        and "rewards: speaker_0" in text
    )


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


ACTIONS = (
    st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.none()
    | st.text(max_size=3)
    | st.lists(st.integers(-5, 50), max_size=20).map(np.array)
    | st.lists(st.floats(-5, 50), max_size=20).map(np.array)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(speaker_action=ACTIONS, pick=ACTIONS)
def test_any_action_is_played_or_refused_with_a_value_error(factories, tokenizer, speaker_action, pick):
    env = factories[1]()
    env.reset(seed=0)
    try:
        env.step({SPEAKER: speaker_action})
    except ValueError:
        assert env.round.caption is None  # refused, and nothing changed
        env.step({SPEAKER: np.array(SPOKEN)})
    else:
        tokens = np.asarray(speaker_action)
        assert (
            tokens.dtype.kind in "iu" and tokens.shape == (16,) and 0 <= tokens.min() and tokens.max() < len(tokenizer)
        )
    try:
        _, rewards, done, _, _ = env.step(dict.fromkeys(env.acting_agents, pick))
    except ValueError:
        assert env.round.outcome is None and env.agents  # refused: the round waits for valid picks
    else:
        assert isinstance(pick, int) and not isinstance(pick, bool) and 0 <= pick < 4 and all(done.values())
