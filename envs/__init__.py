"""MiniGrid environments, wrappers and generalisation splits for rims-rl.

Importing this package registers MiniGrid's ids and this package's own (``RIMs-NovelDistractors-*``,
``RIMs-MemoryS7Cue-v0``) with :func:`register_envs`.
It never imports hydra or ``agents``.
"""

from rims_rl.envs.factory import make_env_fn, make_vec_env
from rims_rl.envs.novel_distractors import HELDOUT_ID, TRAIN_ID, NovelDistractorsEnv, register_novel_distractors
from rims_rl.envs.registration import register_envs
from rims_rl.envs.splits import Split, validate_env_id
from rims_rl.envs.wrappers import (
    MAX_MISSION_LEN,
    PAD_ID,
    UNK_ID,
    VOCAB,
    LevelSeedWrapper,
    MissionToIdsWrapper,
    encode_mission,
    tokenize_mission,
)

register_envs()

__all__ = [
    "HELDOUT_ID",
    "MAX_MISSION_LEN",
    "PAD_ID",
    "TRAIN_ID",
    "UNK_ID",
    "VOCAB",
    "LevelSeedWrapper",
    "MissionToIdsWrapper",
    "NovelDistractorsEnv",
    "Split",
    "encode_mission",
    "make_env_fn",
    "make_vec_env",
    "register_envs",
    "register_novel_distractors",
    "tokenize_mission",
    "validate_env_id",
]
