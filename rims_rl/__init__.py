"""rims_rl: Recurrent Independent Mechanisms with the ``nn.LSTM`` / ``nn.GRU`` interface, plus LSTM/GRU cores.

``RIM(600, 300, num_units=6, k=4)`` replaces ``nn.LSTM(600, 300)``. Every core also accepts ``episode_starts`` to
zero the state of samples where a new episode begins, which is what reinforcement learning needs.
"""

from rims_rl.cores import CORE_NAMES, GRUCore, LSTMCore, make_core
from rims_rl.rim import RIM, RIMCell
from rims_rl.sequence import State, map_state, reset_state

__all__ = ["CORE_NAMES", "RIM", "GRUCore", "LSTMCore", "RIMCell", "State", "make_core", "map_state", "reset_state"]
