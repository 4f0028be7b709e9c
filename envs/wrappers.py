"""Observation and reset wrappers that make MiniGrid environments usable from Stable-Baselines3.

MiniGrid observations are dicts ``{"image": uint8 (7, 7, 3), "direction": int, "mission": str}``. SB3
cannot batch strings, so :class:`MissionToIdsWrapper` replaces the mission string by a fixed-length vector of
word ids from one vocabulary (:data:`VOCAB`) shared by every environment, so that training and held-out
environments encode the same words the same way.

:class:`LevelSeedWrapper` restricts an environment to a fixed list of levels (layouts): each reset draws its
level seed from that list.

Symbols: V vocabulary size (``len(VOCAB)``), L mission length (:data:`MAX_MISSION_LEN`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_NAMES, OBJECT_TO_IDX, STATE_TO_IDX

__all__ = [
    "MAX_MISSION_LEN",
    "PAD_ID",
    "UNK_ID",
    "VOCAB",
    "WORD_TO_ID",
    "LevelSeedWrapper",
    "MissionToIdsWrapper",
    "encode_mission",
    "tokenize_mission",
]

#: Word id used for padding (always trailing).
PAD_ID = 0
#: Word id of every word that is not in the vocabulary.
UNK_ID = 1

#: Fixed mission length L. The longest mission of minigrid 3.2 (LockedRoom: "get the red key from the blue
#: room, unlock the green door and go to the goal") has 17 words; longer missions keep their first L words.
MAX_MISSION_LEN = 20

# Words of minigrid 3.2's mission templates (every ``_gen_mission`` / ``self.mission = ...`` in
# minigrid.envs), except colours and object names, which come from minigrid's own constants below.
_TEMPLATE_WORDS = (  # noqa: SIM905  (one commented line per template family reads better than a list)
    # "get to the green goal square", "avoid the lava and ...", "find the opening and ...", "reach the goal"
    "get to the goal square avoid and find opening reach "
    # "use the key to open the door and then get to the goal", "open the red door then the blue door"
    "use open then "
    # Fetch: "get a", "go get a", "fetch a", "go fetch a", "you must fetch a"; GoTo*: "go to the ..."
    "a go fetch you must "
    # "pick up the ...", "put the ... near the ...", "go to the matching object at the end of the hallway"
    "pick up put near matching object at end of hallway "
    # LockedRoom: "get the ... key from the ... room, unlock the ... door and go to the goal"
    "from room unlock "
    # MultiRoom / WFC: "traverse the rooms to get to the goal", "traverse the maze to get to the goal"
    "traverse rooms maze"
).split()


def _build_vocab() -> tuple[str, ...]:
    words = set(_TEMPLATE_WORDS) | set(COLOR_NAMES) | set(OBJECT_TO_IDX) | set(STATE_TO_IDX)
    return ("<pad>", "<unk>", *sorted(words))


#: The shared vocabulary: ``VOCAB[i]`` is the word with id ``i``; id 0 is padding, id 1 an unknown word.
VOCAB: tuple[str, ...] = _build_vocab()
#: Inverse of :data:`VOCAB`.
WORD_TO_ID: dict[str, int] = {word: i for i, word in enumerate(VOCAB)}

_WORD_RE = re.compile(r"[a-z0-9]+")


def tokenize_mission(mission: str) -> list[str]:
    """Split a mission into lower-case words, dropping punctuation (``"room,"`` -> ``"room"``).

    :param mission: the mission string
    :return: the words, in order

    >>> tokenize_mission("Get the red key from the blue room, unlock")
    ['get', 'the', 'red', 'key', 'from', 'the', 'blue', 'room', 'unlock']
    """
    return _WORD_RE.findall(mission.lower())


def encode_mission(mission: str, max_len: int = MAX_MISSION_LEN) -> np.ndarray:
    """Encode a mission as word ids of :data:`VOCAB`, truncated or padded with :data:`PAD_ID` to ``max_len``.

    :param mission: the mission string
    :param max_len: L, the output length
    :return: int64 array of shape (L,); unknown words map to :data:`UNK_ID`, padding is trailing

    >>> [VOCAB[i] for i in encode_mission("pick up the red ball", max_len=6)]
    ['pick', 'up', 'the', 'red', 'ball', '<pad>']
    """
    if max_len < 1:
        raise ValueError(f"expected max_len >= 1, got {max_len}")
    ids = [WORD_TO_ID.get(word, UNK_ID) for word in tokenize_mission(mission)][:max_len]
    out = np.full(max_len, PAD_ID, dtype=np.int64)
    out[: len(ids)] = ids
    return out


class MissionToIdsWrapper(gym.ObservationWrapper):
    """Turn MiniGrid's dict observation into an SB3-friendly :class:`gymnasium.spaces.Dict`.

    Output observation space:

    - ``image``: ``Box(0, 255, (7, 7, 3), uint8)``, unchanged (object, colour, state indices; channels last);
    - ``direction``: ``Discrete(4)``, unchanged;
    - ``mission``: ``Box(0, V - 1, (L,), int64)``, word ids of the shared :data:`VOCAB` (0 = padding,
      trailing; 1 = unknown word), L = ``max_mission_len``.

    Encodings are cached per mission string.

    :param env: a MiniGrid environment (a Dict observation space with ``image``, ``direction``, ``mission``)
    :param max_mission_len: L, the fixed number of word ids (longer missions are truncated)
    """

    def __init__(self, env: gym.Env, max_mission_len: int = MAX_MISSION_LEN) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict) or not {"image", "direction", "mission"} <= set(space.spaces):
            raise ValueError(
                f"expected a MiniGrid Dict observation space with keys 'image', 'direction', 'mission', got {space}"
            )
        if max_mission_len < 1:
            raise ValueError(f"expected max_mission_len >= 1, got {max_mission_len}")
        self.max_mission_len = max_mission_len
        self._cache: dict[str, np.ndarray] = {}
        self.observation_space = spaces.Dict(
            {
                "image": space["image"],
                "direction": space["direction"],
                "mission": spaces.Box(low=0, high=len(VOCAB) - 1, shape=(max_mission_len,), dtype=np.int64),
            }
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        """:param observation: MiniGrid observation dict
        :return: dict with ``image`` (7, 7, 3) uint8, ``direction`` int and ``mission`` (L,) int64
        """
        mission = observation["mission"]
        ids = self._cache.get(mission)
        if ids is None:
            ids = encode_mission(mission, self.max_mission_len)
            self._cache[mission] = ids
        return {"image": observation["image"], "direction": observation["direction"], "mission": ids.copy()}


class LevelSeedWrapper(gym.Wrapper):
    """Restrict an environment to a fixed list of levels: every reset calls ``env.reset(seed=level_seed)``
    with a level seed drawn uniformly from ``level_seeds``.

    The draws come from the wrapper's own RNG, seeded by ``seed`` and re-seeded whenever ``reset(seed=s)`` is
    called with an explicit seed, so a seeded vectorised env visits the same level sequence every run. Because
    the whole environment is re-seeded with the level seed, everything random within an episode (layout, agent
    start, mission, moving obstacles) is determined by the level, as with Procgen's fixed levels.

    :param env: the environment to restrict
    :param level_seeds: the allowed level seeds (non-empty; repeats weight a level more)
    :param seed: seed of the level-drawing RNG until ``reset`` receives an explicit seed
    """

    def __init__(self, env: gym.Env, level_seeds: Iterable[int], seed: int | None = None) -> None:
        super().__init__(env)
        self.level_seeds: list[int] = [int(s) for s in level_seeds]
        if not self.level_seeds:
            raise ValueError("expected a non-empty list of level seeds, got []")
        if any(s < 0 for s in self.level_seeds):
            raise ValueError(f"expected non-negative level seeds, got {self.level_seeds}")
        self._level_rng = np.random.default_rng(seed)
        self.current_level_seed: int | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset to a level drawn from ``level_seeds``.

        :param seed: if given, re-seed the level-drawing RNG with it before drawing
        :param options: passed on to the wrapped ``reset``
        :return: observation and info; ``info["level_seed"]`` is the level played
        """
        if seed is not None:
            self._level_rng = np.random.default_rng(seed)
        self.current_level_seed = self.level_seeds[int(self._level_rng.integers(len(self.level_seeds)))]
        obs, info = self.env.reset(seed=self.current_level_seed, options=options)
        return obs, {**info, "level_seed": self.current_level_seed}
