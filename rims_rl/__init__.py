"""rims_rl: Recurrent Independent Mechanisms with the ``nn.LSTM`` / ``nn.GRU`` interface, plus LSTM/GRU cores.

``RIM(600, 300, num_units=6, k=4)`` replaces ``nn.LSTM(600, 300)``. Every core also accepts ``episode_starts`` to
zero the state of samples where a new episode begins, which is what reinforcement learning needs.
"""

from rims_rl.cores import CORE_SURFACE, CORES, GRUCore, LSTMCore, check_core, make_core, register_core, resolve_core
from rims_rl.rim import RIM, RIMCell
from rims_rl.sequence import State, map_state, reset_state

__all__ = [
    "CORES",
    "CORE_SURFACE",
    "RIM",
    "GRUCore",
    "LSTMCore",
    "RIMCell",
    "State",
    "check_core",
    "make_core",
    "map_state",
    "register_core",
    "reset_state",
    "resolve_core",
]
