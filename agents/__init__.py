"""agents: recurrent PPO and A2C for Stable-Baselines3 with a pluggable core (any
:data:`rims_rl.CORES` name or an import path), and the algorithm registry :data:`ALGORITHMS`.

>>> from rims_rl.agents import RecurrentPPO
>>> policy_kwargs = dict(core="rim", core_kwargs=dict(hidden_size=64, num_units=4, k=2))
>>> model = RecurrentPPO("MlpRecurrentPolicy", "CartPole-v1", policy_kwargs=policy_kwargs)
"""

from rims_rl.agents.a2c import RecurrentA2C
from rims_rl.agents.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer, RecurrentRolloutBufferSamples
from rims_rl.agents.extractors import MISSION_ENCODERS, MiniGridFeaturesExtractor
from rims_rl.agents.policies import (
    CnnRecurrentPolicy,
    MlpRecurrentPolicy,
    MultiInputRecurrentPolicy,
    RecurrentActorCriticPolicy,
)
from rims_rl.agents.ppo import RecurrentPPO
from rims_rl.agents.registry import ALGORITHMS, get_algorithm

__all__ = [
    "ALGORITHMS",
    "MISSION_ENCODERS",
    "CnnRecurrentPolicy",
    "MiniGridFeaturesExtractor",
    "MlpRecurrentPolicy",
    "MultiInputRecurrentPolicy",
    "RecurrentA2C",
    "RecurrentActorCriticPolicy",
    "RecurrentDictRolloutBuffer",
    "RecurrentPPO",
    "RecurrentRolloutBuffer",
    "RecurrentRolloutBufferSamples",
    "get_algorithm",
]
