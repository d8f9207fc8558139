"""The batched envs: the Gymnasium vector env `listener_sub/DixitSpeaker-v0` (seeding, SAME_STEP autoreset, bad
actions refused, the game core's numbers) and the batched multi-agent front, against the single-board envs."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.utils.passive_env_checker import check_obs, data_shares_objects
from tiny_game import one_thread, tiny_game, tiny_listeners, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.envs import SPEAKER_ENV_ID, BatchedDixitEnv, caption_action, dixit_v0
from listener_sub.rewards import Reward

CAPTIONS = ["a red circle .", "a large blue square .", "the green object .", "a small striped triangle ."]


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="module")
def game():
    return tiny_game(tiny_listeners())


def actions(tokenizer, n: int, offset: int = 0) -> np.ndarray:
    return np.stack([caption_action(tokenizer, CAPTIONS[(i + offset) % len(CAPTIONS)], 16) for i in range(n)])


def test_make_vec_plays_whole_batches_through_the_game_core(game, tokenizer):
    envs = gymnasium.make_vec(SPEAKER_ENV_ID, num_envs=4, game=game, tokenizer=tokenizer, split="test")
    assert envs.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    obs, _ = envs.reset(seed=5)
    assert envs.observation_space.contains(obs) and obs["target"].shape == (4, 64, 64, 3)
    stream = np.random.default_rng(5)
    first, second = game.sample(4, stream, "test"), game.sample(4, stream, "test")
    assert np.array_equal(obs["target"], first.target_images)

    check_obs(obs, envs.observation_space, "reset")  # Gymnasium's own checks of what the env returns
    obs2, rewards, terminated, truncated, infos = envs.step(actions(tokenizer, 4))
    check_obs(obs2, envs.observation_space, "step")
    assert not data_shares_objects(obs, obs2)  # each call returns fresh arrays
    outcome = game.play([CAPTIONS[i] for i in range(4)], first)
    assert rewards == pytest.approx(outcome.reward.numpy(), abs=1e-6) and rewards.dtype == np.float32
    assert terminated.all() and not truncated.any()  # one-step episodes, every one ends
    assert np.array_equal(infos["final_obs"]["target"], first.target_images)  # the board acted on
    assert np.array_equal(obs2["target"], second.target_images)  # the next board, in the same step: none wasted
    assert list(infos["caption"]) == CAPTIONS and np.array_equal(infos["target"], first.target)
    for name in game.listeners:
        assert np.array_equal(infos[f"pick/{name}"], outcome.choices[name].numpy()) and infos[f"_pick/{name}"].all()
        assert np.allclose(infos[f"probs/{name}"], outcome.probs[name].numpy())
    random_tokens = envs.action_space.sample()  # any action of the space is played
    assert np.isfinite(envs.step(random_tokens)[1]).all()


def test_seeding_and_the_board_observation(game, tokenizer):
    def run(seed):
        envs = gymnasium.make_vec(SPEAKER_ENV_ID, num_envs=3, game=game, tokenizer=tokenizer, board=True)
        out = [envs.reset(seed=seed)[0]]
        for step in range(2):
            out.append(envs.step(actions(tokenizer, 3, step))[:2])
        return out, envs

    (a, envs), (b, _), (c, _) = run(1), run(1), run(2)
    assert data_equivalence(a, b)  # the same seed, the same boards and rewards
    assert not np.array_equal(a[0]["target"], c[0]["target"])
    assert envs.single_observation_space["board"].shape == (4, 64, 64, 3)
    boards = game.sample(3, np.random.default_rng(1), "train")
    assert np.array_equal(a[0]["board"], boards.images)


@pytest.mark.parametrize(
    "bad",
    [
        lambda a: a[:2],  # too few envs
        lambda a: a[:, :8],  # too few tokens
        lambda a: a.astype(np.float32),  # floats
        lambda a: np.where(a == a[0, 0], 10**6, a),  # an id out of the vocabulary
        lambda a: -a - 1,  # negative ids
    ],
)
def test_bad_actions_are_refused_not_truncated(game, tokenizer, bad):
    envs = gymnasium.make_vec(SPEAKER_ENV_ID, num_envs=3, game=game, tokenizer=tokenizer)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="the speaker acts with 3x16 integer token ids"):
        envs.step(bad(actions(tokenizer, 3)))


def test_the_batched_front_plays_what_the_single_board_env_plays(game, tokenizer):
    """BatchedDixitEnv with one board gives every agent the rewards the single-board Parallel env gives on the same
    seed, caption and picks; with a batch, the speaker's reward is `Game.judge` with the listener agents' picks."""
    picks = {"listener_0": 1, "listener_1": 0, "listener_2": 2}
    single = dixit_v0.parallel_env(game=game, tokenizer=tokenizer, split="test")
    single.reset(seed=3)
    single.step({"speaker_0": caption_action(tokenizer, CAPTIONS[0], 16)})
    _, expected, *_ = single.step(picks)

    batched = BatchedDixitEnv(1, game, tokenizer, split="test")
    obs, infos = batched.reset(seed=3)
    assert infos["speaker_0"]["acts"] and not infos["listener_0"]["acts"]
    assert np.array_equal(obs["listener_0"]["caption"], np.full((1, 16), tokenizer.pad_token_id))
    obs, rewards, *_ = batched.step({"speaker_0": actions(tokenizer, 1)})
    assert np.array_equal(obs["listener_1"]["caption"], actions(tokenizer, 1))
    assert all(r == 0 for r in np.concatenate(list(rewards.values())))
    _, rewards, terminations, _, infos = batched.step({agent: np.array([p]) for agent, p in picks.items()})
    assert {agent: float(r[0]) for agent, r in rewards.items()} == pytest.approx(expected)
    assert all(t.all() for t in terminations.values()) and batched.agents == []

    acc = tiny_game(game.listeners, Reward({"full": 1.0}, {"gray": 1.0}, score="acc"))
    many = BatchedDixitEnv(4, acc, tokenizer)
    many.reset(seed=0)
    many.step({"speaker_0": actions(tokenizer, 4)})
    chosen = {f"listener_{i}": np.array([0, 1, 2, 3]) for i in range(3)}
    _, rewards, *_ = many.step(chosen)
    boards = acc.sample(4, np.random.default_rng(0), "train")
    outcome = acc.judge(acc.listen(CAPTIONS, boards), {n: torch.tensor([0, 1, 2, 3]) for n in acc.listeners}, boards)
    assert rewards["speaker_0"] == pytest.approx(outcome.reward.numpy())
    assert np.array_equal(rewards["listener_0"], (np.arange(4) == boards.target).astype(np.float32))
    with pytest.raises(ValueError, match="listener_0 picks 4 integer positions in \\[0, 4\\)"):
        many.reset(seed=0)
        many.step({"speaker_0": actions(tokenizer, 4)})
        many.step({**chosen, "listener_0": np.array([0, 1, 2, 9])})


def test_bench_plays_the_same_boards_on_both_envs(game, tokenizer):
    """`bench parts=[env]`: the vector env and the AEC env (its listener agents the game's listener models) give the
    same reward on every board they both play; the command refuses parts=[env] outside preset=tiny."""
    from hydra import compose, initialize_config_module

    from listener_sub.bench import bench_env
    from listener_sub.commands.bench import check
    from listener_sub.errors import UserError

    results = bench_env(game, tokenizer, num_envs=6, steps=2, aec_boards=8)
    assert results["env/reward_max_diff"] == 0.0
    assert results["env/vector_boards_per_s"] > 0 and results["env/aec_boards_per_s"] > 0
    assert results["env/speedup"] == pytest.approx(results["env/vector_boards_per_s"] / results["env/aec_boards_per_s"])
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("bench", overrides=["preset=real", "parts=[env]"])
    with pytest.raises(UserError, match="parts=\\[env\\] measures the envs in the embedded default's game"):
        check(cfg)
