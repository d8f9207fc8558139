"""The batched game core: boards drawn from a pool of scenes, listeners' choices and rewards, whole batches at once.

Every caption anyone scores -- the RL trainer, the evaluations, the oracle speakers, the PettingZoo envs and
their listener policies, the report -- goes through `listen` (below `Game.listen` / `Game.play`), so nothing
can disagree about the rules or the scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from listener_sub.data import DataConfig, DataSource, ImageSet
from listener_sub.data.imageset import Pixels
from listener_sub.data.synthetic import synthetic_images
from listener_sub.draws import categorical, uniforms
from listener_sub.errors import DataError, UserError
from listener_sub.features import PoolFeatures
from listener_sub.files import config_key
from listener_sub.rewards import Reward, listener_rewards
from listener_sub.world import SceneBatch, WorldConfig

if TYPE_CHECKING:  # annotations only: importing open_clip costs seconds
    from listener_sub.models.listener import Listener

DISTRACTORS = ("random", "hard", "differ_one")  # how a board's distractors relate to its target
CHOICES = ("argmax", "sample")  # how a listener turns P(image | caption) into a pick


@dataclass(eq=False)
class Pool:
    """The images of one split that boards index into (an ImageSet), and each listener's features of them.

    Features are computed once per listener (`PoolFeatures`): lazily for the images boards use, or by `warm` for the
    whole pool in a fixed order, kept on disk in a `cache` directory keyed by (the listener's weights and perception,
    the images), so the next run reads them instead.
    """

    data: ImageSet
    cache: Path | None = None  # directory of on-disk feature tables (None: memory only)
    _features: PoolFeatures = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._features = PoolFeatures(self.data, self.cache)

    @classmethod
    def build(cls, world: WorldConfig, split: str, size: int) -> Pool:
        """Scenes 0 .. size-1 of a split of the world, rendered."""
        return cls(synthetic_images(world, split, size))

    def __len__(self) -> int:
        return len(self.data)

    @property
    def images(self) -> Pixels:
        """(P, H, W, 3) uint8, indexable with integer arrays of any shape."""
        return self.data.images

    @property
    def scenes(self) -> SceneBatch | None:
        """Scene i of the pool is its image i's scene (None: data without attributes)."""
        return self.data.scenes

    @property
    def split(self) -> str:
        return self.data.split

    @property
    def attrs(self) -> np.ndarray:
        """(P, A) attribute value indices of each scene's referent (object 0)."""
        return self.data.attrs

    def features(self, listener: Listener, items: np.ndarray) -> torch.Tensor:
        """(*items.shape, D) unit-norm image features as `listener` sees pool images (through its perception)."""
        return self._features.lookup(listener, items)

    def warm(self, listener: Listener) -> None:
        """Every image's features for the listener, in a fixed order (read from the disk cache when it holds them)."""
        self._features.warm(listener)

    def describe(self, item: int) -> str:
        """Pool image `item` in words (its referent, else its first reference caption, else its file)."""
        return self.data.describe(item)


@dataclass
class Boards:
    """B boards of N pool indices; the target sits at position `target` of its board."""

    items: np.ndarray  # (B, N) int64 pool indices, all distinct within a board
    target: np.ndarray  # (B,) int64 position of the target in its board
    pool: Pool | None = None  # what the indices point into (None: bare indices from `sample_boards`)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, sel: Any) -> Boards:
        """A sub-batch (slice, index array or mask), still pointing into the same pool."""
        rows = np.atleast_1d(np.arange(len(self))[sel])
        return Boards(self.items[rows], self.target[rows], self.pool)

    def repeat(self, k: int) -> Boards:
        """Each board k times in a row (row b * k + j is board b), the order of `Speaker.generate(..., k)`."""
        return Boards(np.repeat(self.items, k, axis=0), np.repeat(self.target, k), self.pool)

    @property
    def target_items(self) -> np.ndarray:
        """(B,) pool index of each board's target."""
        return self.items[np.arange(len(self.items)), self.target]

    def checked_pool(self) -> Pool:
        """The pool the boards index into (raises when they carry none)."""
        if self.pool is None:
            raise ValueError("these boards carry no pool; sample them with Game.sample or sample_boards(..., pool=...)")
        return self.pool

    @property
    def images(self) -> np.ndarray:
        """(B, N, H, W, 3) uint8 board images."""
        return self.checked_pool().images[self.items]

    @property
    def target_images(self) -> np.ndarray:
        """(B, H, W, 3) uint8 target images (what the speaker sees)."""
        return self.checked_pool().images[self.target_items]

    @property
    def target_attrs(self) -> np.ndarray:
        """(B, A) attribute value indices of each target's referent (data with scenes only)."""
        return self.checked_pool().attrs[self.target_items]


def _distinct_rows(rows: np.ndarray) -> np.ndarray:
    """(B,) True where a row of indices has no repeated value."""
    s = np.sort(rows, axis=1)
    return (np.diff(s, axis=1) != 0).all(axis=1)


def _eligible(target_attrs: np.ndarray, attrs: np.ndarray, distractors: str) -> np.ndarray:
    """(B, P) True where pool scene p may be a distractor for target b under a `hard` or `differ_one` policy."""
    shared = sum(
        (attrs[None, :, a] == target_attrs[:, None, a]).astype(np.int8) for a in range(attrs.shape[1])
    )  # (B, P)
    if distractors == "hard":
        return (shared >= 1) & (shared < attrs.shape[1])  # shares an attribute, yet can be told apart
    return shared == attrs.shape[1] - 1  # differ_one: differs in exactly one attribute


def _sample_related(
    attrs: np.ndarray, n_boards: int, n_images: int, rng: np.random.Generator, distractors: str
) -> np.ndarray:
    """(B, N) pool indices, column 0 the target, the rest distinct distractors drawn uniformly from the eligible
    ones."""
    targets = rng.integers(0, len(attrs), size=n_boards)  # (B,)
    eligible = _eligible(attrs[targets], attrs, distractors)  # (B, P)
    short = eligible.sum(1) < n_images - 1
    for _ in range(100):  # redraw the targets that have too few eligible distractors
        if not short.any():
            break
        targets[short] = rng.integers(0, len(attrs), size=int(short.sum()))
        eligible[short] = _eligible(attrs[targets[short]], attrs, distractors)
        short = eligible.sum(1) < n_images - 1
    if short.any():
        raise ValueError(
            f"too few scenes in the pool have {n_images - 1} `{distractors}` distractors; use a larger pool"
        )
    keys = np.where(
        eligible, rng.random(eligible.shape, dtype=np.float32), np.inf
    )  # (B, P) random order of the eligible
    distractor = np.argpartition(keys, n_images - 2, axis=1)[:, : n_images - 1]  # (B, N-1) the first N-1 of them
    return np.concatenate([targets[:, None], distractor], axis=1)


def sample_boards(
    pool_size: int,
    n_boards: int,
    n_images: int,
    rng: np.random.Generator,
    distractors: str = "random",
    pool: Pool | None = None,
) -> Boards:
    """Boards of a target and N-1 distinct distractors; the target's position is uniform.

    distractors: `random` (any other pool scene), `hard` (shares at least one attribute value with the
    target's referent and differs in another), `differ_one` (differs from it in exactly one attribute).
    The last two read the referents' attributes from `pool`. Deterministic given the state of `rng`.
    """
    if distractors not in DISTRACTORS:
        raise ValueError(f"unknown distractors {distractors!r}; choose one of: {', '.join(DISTRACTORS)}")
    if n_images < 2 or pool_size < n_images:
        raise ValueError(f"boards need 2 <= n_images <= pool size; got n_images={n_images}, pool of {pool_size} scenes")
    if distractors == "random":
        items = rng.integers(0, pool_size, size=(n_boards, n_images))  # (B, N), column 0 the target
        bad = ~_distinct_rows(items)
        while bad.any():  # redraw the few boards with a repeated scene
            items[bad] = rng.integers(0, pool_size, size=(int(bad.sum()), n_images))
            bad = ~_distinct_rows(items)
    elif pool is None or len(pool) != pool_size:
        raise ValueError(f"`{distractors}` distractors need the pool of {pool_size} scenes (pool=...)")
    elif pool.scenes is None:
        raise ValueError(
            f"`{distractors}` distractors need images with scene attributes; {pool.data.name} has none "
            "(use game.distractors=random)"
        )
    else:
        items = _sample_related(pool.attrs, n_boards, n_images, rng, distractors)
    target = rng.integers(0, n_images, size=n_boards)
    rows = np.arange(n_boards)
    items[rows, 0], items[rows, target] = items[rows, target], items[rows, 0].copy()  # move the target
    return Boards(items=items, target=target, pool=pool)


def choose(
    probs: torch.Tensor,
    choice: str = "argmax",
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """(..., N) probabilities -> (...) int64 picks: the most probable image, or a draw (`sample`) by inverse CDF with
    the (...) `uniform` numbers (drawn from `generator` when not given)."""
    if choice == "argmax":
        return probs.argmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])  # (M, N)
    if uniform is None:
        uniform = uniforms(len(flat), 1, generator, probs.device)
    return categorical(flat, uniform.reshape(-1)).view(probs.shape[:-1])


def decode_tokens(tokenizer: Any, tokens: np.ndarray | torch.Tensor) -> list[str]:
    """(B, L) token ids of the speaker's LM -> caption texts: cut at the first EOS, special tokens dropped."""
    rows = torch.as_tensor(tokens).tolist()
    eos = tokenizer.eos_token_id
    cut = [row[: row.index(eos)] if eos in row else row for row in rows]
    return [text.strip() for text in tokenizer.batch_decode(cut, skip_special_tokens=True)]


@torch.no_grad()
def listen(listeners: Mapping[str, Listener], captions: Sequence[str], boards: Boards) -> dict[str, torch.Tensor]:
    """Listener name -> (B, N) P(image | caption): softmax over the board of logit scale x cosine(caption, image).

    Each listener sees the board images through its perception (features cached per pool) and encodes each caption
    it has not read before once (`Listener.encode_texts`).
    """
    if len(captions) != len(boards):
        raise ValueError(f"{len(captions)} captions for {len(boards)} boards")
    pool = boards.checked_pool()
    return {
        name: choice_probs(listener, listener.encode_texts(captions), pool.features(listener, boards.items))
        for name, listener in listeners.items()
    }


def choice_probs(listener: Listener, text: torch.Tensor, board: torch.Tensor) -> torch.Tensor:
    """(B, N) P(image | caption) = softmax over the board of logit scale x cosine: text (B, D), board (B, N, D)
    unit-norm."""
    return (listener.logit_scale * torch.einsum("bd,bnd->bn", text, board)).softmax(-1)


@dataclass
class Outcome:
    """What happened on B boards: each listener's view of the caption, its pick, and the rewards."""

    probs: dict[str, torch.Tensor]  # listener name -> (B, N) P(image | caption) through its perception
    target_probs: dict[str, torch.Tensor]  # listener name -> (B,) P(target | caption), what the reward reads
    choices: dict[str, torch.Tensor]  # listener name -> (B,) int64 picked position
    correct: dict[str, torch.Tensor]  # listener name -> (B,) bool, picked the target
    reward: torch.Tensor  # (B,) the speaker's reward
    gap: torch.Tensor  # (B,) intended minus subtracted accuracy
    prob_gap: torch.Tensor  # (B,) intended minus subtracted probability of the target (the continuous gap)

    @property
    def listener_rewards(self) -> dict[str, torch.Tensor]:
        """Listener name -> (B,) its own reward (1 for picking the target)."""
        return listener_rewards(self.correct)


def check_game(
    players: Sequence[str], reward: Reward | None, n_images: int, distractors: str, choice: str, pool_size: int | None
) -> None:
    """Raise ValueError on game settings that cannot work (with a reward: one that reads listeners who do not play)."""
    missing = [name for name in reward.listeners if name not in players] if reward is not None else []
    if missing:
        raise ValueError(f"the reward reads listener(s) {missing}, which are not among the players {list(players)}")
    if distractors not in DISTRACTORS:
        raise ValueError(f"unknown distractors {distractors!r}; choose one of: {', '.join(DISTRACTORS)}")
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; choose one of: {', '.join(CHOICES)}")
    if n_images < 2 or (pool_size is not None and pool_size < n_images):
        raise ValueError(f"need 2 <= n_images <= pool_size; got n_images={n_images}, pool_size={pool_size}")


def check_images(images: ImageSet, n_images: int, distractors: str) -> None:
    """A DataError unless the image set holds a board; a UserError when the distractor policy needs scenes it lacks."""
    if len(images) < n_images:
        raise DataError(
            f"{images.name} has {len(images)} usable image(s), fewer than one board of game.n_images={n_images}; "
            "add images or lower game.n_images"
        )
    if distractors != "random" and images.scenes is None:
        raise UserError(
            f"game.distractors={distractors} needs images with scene attributes; {images.name} has none "
            "(use game.distractors=random)"
        )


class Game:
    """The listener-subtraction reference game over pools of images, one pool per (data, split).

    Listeners may include players the reward does not read (a control listener); they choose all the same. Build one
    with `create_game` (data: a DataSource or a WorldConfig; listeners: name -> Listener; reward: a Reward; the
    settings of `GameConfig`), or take the default experiment's from `listener_sub.default_players()`.

        game = listener_sub.default_players().game
        boards = game.sample(32, numpy.random.default_rng(0), "test")  # 32 boards of 4 held-out images
        outcome = game.play(captions, boards)  # (B,) captions -> each listener's probs and picks, the (B,) rewards
        print(outcome.gap.mean(), {name: c.float().mean() for name, c in outcome.correct.items()})
    """

    def __init__(
        self,
        data: DataSource,
        listeners: Mapping[str, Listener],
        reward: Reward,
        n_images: int,
        distractors: str,
        choice: str,
        pool_size: int | None,
    ) -> None:
        """Use `create_game` (it documents the settings and their defaults)."""
        check_game(list(listeners), reward, n_images, distractors, choice, pool_size)
        self.data, self.listeners, self.reward = data, dict(listeners), reward
        self.n_images, self.distractors, self.choice, self.pool_size = n_images, distractors, choice, pool_size
        self._pools: dict[tuple[str | None, str], Pool] = {}

    def pool(self, split: str, data: DataConfig | None = None) -> Pool:
        """The pool of a split of the game's data (or of `data`, e.g. for zero-shot evaluation), loaded on first use."""
        key = (
            None if data is None else config_key(data),
            split,
        )  # hashed only for other data: sample() runs every step
        if key not in self._pools:
            source = self.data if data is None else self.data.with_config(data)
            images = source.load(split, self.pool_size)
            check_images(images, self.n_images, self.distractors)
            cache = None if source.cache_dir is None else Path(source.cache_dir)
            self._pools[key] = Pool(images, cache)
        return self._pools[key]

    def sample(
        self, n_boards: int, rng: np.random.Generator, split: str = "train", data: DataConfig | None = None
    ) -> Boards:
        """n_boards boards of the split's pool (train for RL, test for evaluation), deterministic given `rng`."""
        pool = self.pool(split, data)
        return sample_boards(len(pool), n_boards, self.n_images, rng, self.distractors, pool)

    def listen(self, captions: Sequence[str], boards: Boards) -> dict[str, torch.Tensor]:
        """Listener name -> (B, N) P(image | caption) of each of the game's listeners (`listen`)."""
        return listen(self.listeners, captions, boards)

    def choose(
        self,
        probs: Mapping[str, torch.Tensor],
        generator: torch.Generator | None = None,
        draws: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Listener name -> (B,) picks by the game's choice rule; a sampled pick of listener i draws with draws[:, i]
        ((B, listeners) uniform numbers; from `generator` when not given)."""
        return {
            name: choose(p, self.choice, generator, None if draws is None else draws[:, i])
            for i, (name, p) in enumerate(probs.items())
        }

    def judge(self, probs: Mapping[str, torch.Tensor], choices: Mapping[str, torch.Tensor], boards: Boards) -> Outcome:
        """Rewards of picks made on the boards: probs (B, N) and choices (B,) per listener."""
        device = next(iter(probs.values())).device
        target = torch.as_tensor(boards.target, device=device)  # (B,)
        choices = {name: torch.as_tensor(c, device=device).long() for name, c in choices.items()}
        correct = {name: c == target for name, c in choices.items()}
        target_probs = {name: p.gather(-1, target[:, None]).squeeze(-1) for name, p in probs.items()}  # (B,)
        return Outcome(
            dict(probs),
            target_probs,
            choices,
            correct,
            self.reward(target_probs, correct, chance=1.0 / boards.items.shape[1]),
            self.reward.gap(correct),
            self.reward.gap(target_probs),
        )

    def role(self, name: str) -> str:
        """A listener's part in the reward: intended, subtracted, or player (a listener the reward does not read)."""
        if name in self.reward.intended:
            return "intended"
        return "subtracted" if name in self.reward.subtracted else "player"

    def won(self, correct: Mapping[str, bool]) -> bool:
        """Whether one board is won: every intended listener right (picked the target), every subtracted one wrong."""
        return all(correct[n] for n in self.reward.intended) and not any(correct[n] for n in self.reward.subtracted)

    def play(
        self,
        captions: Sequence[str],
        boards: Boards,
        generator: torch.Generator | None = None,
        draws: torch.Tensor | None = None,
    ) -> Outcome:
        """One round on every board: listeners hear the captions (B,), pick by the choice rule (`choose`), rewards
        follow."""
        probs = self.listen(captions, boards)
        return self.judge(probs, self.choose(probs, generator, draws), boards)


@dataclass
class GameConfig:
    """How the game is played (the `game` config node); `create_game` takes the same settings as arguments."""

    n_images: int = 4  # images on a board: the target and n_images - 1 distractors
    # random | hard (share an attribute with the target) | differ_one (differ in exactly one attribute)
    distractors: str = "random"
    choice: str = "argmax"  # how a listener turns P(image | caption) into its pick: argmax | sample
    pool_size: Optional[int] = 4096  # images per pool (the first of a split; null: every image of a folder)
    listeners: Optional[list[str]] = None  # the listeners that play; null: the reward's (intended first)

    def __post_init__(self) -> None:
        check_game(self.listeners or [], None, self.n_images, self.distractors, self.choice, self.pool_size)

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of `create_game` (every field but `listeners`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "listeners"}


def create_game(
    data: DataSource | WorldConfig,
    listeners: Mapping[str, Listener],
    reward: Reward,
    n_images: int = GameConfig.n_images,
    distractors: str = GameConfig.distractors,
    choice: str = GameConfig.choice,
    pool_size: int | None = GameConfig.pool_size,
) -> Game:
    """The listener-subtraction game over a dataset's images (a WorldConfig: the embedded world's scenes); the settings
    are `GameConfig`'s.

        game = create_game(WorldConfig(), {"full": full, "gray": gray}, Reward({"full": 1.0}, {"gray": 1.0}))
        boards = game.sample(32, numpy.random.default_rng(0), "test")
        outcome = game.play(captions, boards)  # picks, P(target), each listener's accuracy, the reward
    """
    source = DataSource(world=data) if isinstance(data, WorldConfig) else data
    return Game(source, listeners, reward, n_images, distractors, choice, pool_size)
