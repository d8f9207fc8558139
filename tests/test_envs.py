"""PettingZoo envs: the API tests, seeding, rendering, and agreement with the game core on the same seed."""

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test, seed_test
from pettingzoo.utils.conversions import aec_wrapper_fn
from PIL import Image
from tiny_game import one_thread, tiny_game, tiny_listeners, tiny_speaker, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.cache import MissingArtifact
from listener_sub.envs import ENV_ID, caption_action, dixit_v0, make
from listener_sub.envs.policies import model_policies
from listener_sub.envs.render import MARGIN, PICK_COLORS, RING, TARGET_COLOR, layout
from listener_sub.envs.round import SPEAKER
from listener_sub.rewards import SCORES, Reward


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
        env.unwrapped.round.pick({"listener_0": 7})


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
        aec.round.pick({"listener_0": 1})


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


def test_ansi_transcript_reads_positions_from_0_and_p_target(factories, speaker):
    env = factories[0](render_mode="ansi")
    _, record = play_aec(env, model_policies(env.unwrapped.round, speaker), seed=5)
    text = env.render()
    target, gray = record["target"], record["listeners"]["listener_1"]
    assert repr(record["caption"]) in text and f"target at {target}" in text and "rewards: speaker_0" in text
    verdict = "right" if gray["correct"] else "wrong"
    assert f"listener_1 (gray): picks {gray['choice']} {verdict} p(target)={gray['probs'][target]:.2f}" in text


def test_frame_shows_each_listeners_view_target_and_picks_outside_the_images(factories, speaker):
    env = factories[0](render_mode="rgb_array")
    round_ = env.unwrapped.round
    _, record = play_aec(env, model_policies(round_, speaker), seed=5)
    picture = env.render()
    Image.fromarray(picture).save("/tmp/frame.png")  # to look at
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    at = layout(round_)
    target = record["target"]
    assert [text for text, _ in at.header][0] == f'speaker_0 says "{record["caption"]}"'
    assert any(text.startswith(f"target: position {target},") for text, _ in at.header)
    for row, (agent, name) in enumerate(round_.listeners.items()):
        label = [text for text, _ in at.labels[row]]
        assert label[:2] == [f"{agent}: {name}", f"sees {round_.game.listeners[name].perception.name}"]
        pick = record["listeners"][agent]["choice"]
        for i, seen in enumerate(round_.view(agent)):
            x0, y0, x1, y1 = at.box(row, i)
            scale = (x1 - x0) // seen.shape[1]
            # the listener's own view, scaled up, with nothing drawn on it
            assert np.array_equal(picture[y0:y1, x0:x1], seen.repeat(scale, 0).repeat(scale, 1))
            middle = (y0 + y1) // 2
            border = picture[middle, x0 - RING : x0]  # left of the image: the pick's border
            assert np.all(border == PICK_COLORS[row]) == (i == pick), (agent, i)
            frame = picture[middle, x0 - MARGIN + 2 : x0 - RING]  # further left: the target's frame
            assert np.all(frame == TARGET_COLOR) == (i == target), (agent, i)

    def shown(row):
        x0, y0, x1, y1 = at.box(row, 0)
        return picture[y0:y1, x0:x1].astype(int)

    gray = shown(1)  # listener_1 perceives in grayscale, listener_0 in full colour
    assert np.all(gray.max(-1) - gray.min(-1) <= 1) and np.any(shown(0).max(-1) - shown(0).min(-1) > 30)


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


@pytest.mark.parametrize("text", ["a red object .", "circle", "a small blue striped square on the left ."])
def test_caption_action_round_trips_through_either_env(factories, tokenizer, text):
    action = caption_action(tokenizer, text, 16)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert action.shape == (16,) and action.dtype == np.int64
    assert action.tolist() == ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (15 - len(ids))
    aec = factories[0]()
    aec.reset(seed=0)
    aec.step(action)
    assert aec.unwrapped.round.caption == text and aec.infos[SPEAKER]["caption"] == text
    assert np.array_equal(aec.observe("listener_0")["caption"], action)
    parallel = factories[1]()
    parallel.reset(seed=0)
    _, _, _, _, infos = parallel.step({SPEAKER: action})
    assert infos[SPEAKER]["caption"] == text


def test_caption_action_fills_the_action_or_refuses(tokenizer, speaker, game):
    full = " ".join(["red"] * 16)
    action = caption_action(tokenizer, full, 16)  # 16 ids and no room for EOS: the whole action is the caption
    assert tokenizer.eos_token_id not in action.tolist()
    round_ = dixit_v0.raw_env(game=game, tokenizer=tokenizer).round
    round_.reset(seed=0)
    round_.speak(action)
    assert round_.caption == full
    with pytest.raises(ValueError, match="17 token ids, more than the action's max_tokens=16"):
        caption_action(tokenizer, full + " red", 16)
    caption = speaker.generate(round_.boards.target_images, greedy=True).texts[0]  # the speaker's own caption
    round_.reset(seed=0)
    round_.speak(caption_action(tokenizer, caption, 16))
    assert round_.caption == caption


def test_infos_say_who_acts_and_off_phase_actions_are_not_read(factories, tokenizer):
    spoken, other = caption_action(tokenizer, "a red object .", 16), caption_action(tokenizer, "a blue one .", 16)
    listeners = ["listener_0", "listener_1", "listener_2"]
    plain = factories[1]()
    plain.reset(seed=3)
    plain.step({SPEAKER: spoken})
    *_, expected_infos = plain.step(dict.fromkeys(listeners, 1))
    expected_rewards = plain.round.rewards()

    env = factories[1]()
    _, infos = env.reset(seed=3)
    assert {a: (i["phase"], i["acts"]) for a, i in infos.items()} == {
        SPEAKER: ("speak", True),
        **{a: ("speak", False) for a in listeners},
    }
    *_, infos = env.step({SPEAKER: spoken} | dict.fromkeys(listeners, 2))  # listeners' picks: not their phase
    assert env.round.picks == {} and [a for a, i in infos.items() if i["acts"]] == listeners == env.acting_agents
    assert all(i["phase"] == "pick" for i in infos.values())
    *_, infos = env.step({SPEAKER: other} | dict.fromkeys(listeners, 1))  # a second caption: not the speaker's phase
    assert np.array_equal(env.round.tokens, spoken) and env.round.caption == "a red object ."
    assert env.round.rewards() == expected_rewards and infos == expected_infos
    assert all(i == {**i, "phase": "done", "acts": False} for i in infos.values()) and env.acting_agents == []

    garbage = factories[1]()  # an off-phase action is not even checked
    garbage.reset(seed=3)
    garbage.step({SPEAKER: spoken, "listener_0": "nonsense"})
    garbage.step({SPEAKER: None} | dict.fromkeys(listeners, 1))
    assert garbage.round.rewards() == expected_rewards

    aec = factories[0]()
    aec.reset(seed=3)
    for agent in aec.agent_iter():  # the agent AEC selects is one the round reads
        _, _, done, _, info = aec.last()
        phase = "done" if done else "speak" if agent == SPEAKER else "pick"
        assert (info["phase"], info["acts"]) == (phase, not done)
        aec.step(None if done else spoken if agent == SPEAKER else 1)
    assert aec.unwrapped.round.rewards() == expected_rewards


def play_picks(game, tokenizer, picks: dict[str, int]) -> tuple[dict[str, float], list[float], list[float], int]:
    """A parallel episode of `game` (seed 3) with a fixed caption and these picks (listener agent -> position, or
    'target' / 'miss'): the rewards, full's and gray's P(image | caption), the target."""
    env = dixit_v0.parallel_env(game=game, tokenizer=tokenizer, split="test")
    env.reset(seed=3)
    env.step({SPEAKER: caption_action(tokenizer, "a red object .", 16)})
    target = env.round.boards.target[0]
    positions = {a: int(target if p == "target" else (target + 1) % 4) for a, p in picks.items()}
    *_, rewards, _, _, infos = env.step(positions)
    return rewards, infos["listener_0"]["probs"], infos["listener_1"]["probs"], int(target)


def test_speaker_reward_follows_picks_with_acc_and_not_with_prob(game, tokenizer):
    """listener_0 is full (intended), listener_1 gray (subtracted), listener_2 full_b (a control, not in the reward)."""
    paper = {"chance_floor": False, "misled_cost": 0.0}  # the paper's reward, checked by hand below
    rules = {score: Reward({"full": 1.0}, {"gray": 1.0}, score=score, **paper) for score in SCORES}
    games = {score: tiny_game(game.listeners, reward) for score, reward in rules.items()}
    right = {"listener_0": "target", "listener_1": "miss", "listener_2": "target"}
    for score, g in games.items():
        base, full, gray, target = play_picks(g, tokenizer, right)
        assert base["listener_0"] == 1.0 and base["listener_1"] == 0.0  # a listener's own reward: its pick
        flipped, *_ = play_picks(g, tokenizer, right | {"listener_0": "miss"})
        control, *_ = play_picks(g, tokenizer, right | {"listener_2": "miss"})
        assert control[SPEAKER] == base[SPEAKER] and flipped["listener_0"] == 0.0
        if score == "acc":
            assert (base[SPEAKER], flipped[SPEAKER]) == (1.0, 0.0)
        elif score == "dixit":
            assert (base[SPEAKER], flipped[SPEAKER]) == (1.0, 0.0)  # one of the reward's two listeners right, then none
        else:  # the models' P(target), whatever the agents pick
            expected = full[target] - gray[target] if score == "prob" else np.log(full[target]) - np.log(gray[target])
            assert flipped[SPEAKER] == base[SPEAKER] == pytest.approx(expected, abs=1e-5)


def test_default_split_is_train_and_rollout_plays_test(game, tokenizer):
    env = make(ENV_ID, game=game, tokenizer=tokenizer, render_mode="ansi")
    env.reset(seed=0)
    assert env.unwrapped.round.split == "train" and "(synthetic train)" in env.render()
    assert dixit_v0.parallel_env(game=game, tokenizer=tokenizer).round.split == "train"
    assert "The default split is `train`" in dixit_v0.__doc__
    assert all("default `train`" in cls.__doc__ for cls in (dixit_v0.raw_env, dixit_v0.parallel_raw_env))
    assert '`split="test"`, the split `listener-sub rollout` plays' in dixit_v0.__doc__


def test_the_first_line_a_pettingzoo_user_types_plays_the_cached_default(default_models):
    """dixit_v0.env() / parallel_env() with no arguments: the default experiment's game and captioning speaker from the
    cache. The session's tiny models stand in for the default ones at the default's places in a fresh cache."""
    api_test(dixit_v0.env(), num_cycles=2)
    parallel_api_test(dixit_v0.parallel_env(), num_cycles=2)
    seed_test(dixit_v0.env, num_cycles=2)
    parallel_seed_test(dixit_v0.parallel_env, num_cycles=2)
    render_test(dixit_v0.env)
    env = dixit_v0.env()
    assert env.unwrapped.round.listeners == {"listener_0": "full", "listener_1": "gray"}  # experiment=colorblind


def test_the_default_env_never_trains_a_model(isolated_cache):
    with pytest.raises(MissingArtifact, match="lacks .*; build them once with `listener-sub pretrain`"):
        dixit_v0.parallel_env()
    assert not any(path.is_file() for path in isolated_cache.rglob("*"))  # nothing was built or written
