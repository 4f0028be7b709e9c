"""Features extractor for MiniGrid's Dict observations (``image``, ``direction``, ``mission`` word ids).

Symbols: B batch, C image channels (3: object, colour, state indices), H x W the egocentric view (7 x 7),
N direction count (4), L mission length, V vocabulary size, E word-embedding size; with ``output="set"``: S set
elements (H * W cells, then the direction, then the mission where each is used), F element size.

The observation space this module expects is the one produced by ``rims_rl.envs.MissionToIdsWrapper`` (this package
does not import ``envs``): ``image`` ``Box(0, 255, (7, 7, 3), uint8)`` (or channels first, as after SB3's
``VecTransposeImage``), ``direction`` ``Discrete(4)``, ``mission`` ``Box(0, V - 1, (L,), int64)`` with 0 as
trailing padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import gymnasium as gym
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["EXTRACTOR_OUTPUTS", "MISSION_ENCODERS", "MiniGridFeaturesExtractor"]

MISSION_ENCODERS = ("none", "bow", "gru")
MissionEncoder = Literal["none", "bow", "gru"]
#: What the extractor emits: one feature vector per observation, or a set of elements (``model.features``).
EXTRACTOR_OUTPUTS = ("vector", "set")
ExtractorOutput = Literal["vector", "set"]


class MiniGridFeaturesExtractor(BaseFeaturesExtractor):
    """Concatenate a CNN over the symbolic image, a direction embedding and an optional mission encoding.

    - Image: the usual MiniGrid CNN (rl-starter-files; Farama's "Training Minigrid Environments" tutorial):
      ``Conv2d(C, c1, 2)``, ReLU, ``MaxPool2d(2)``, ``Conv2d(c1, c2, 2)``, ReLU, ``Conv2d(c2, c3, 2)``, ReLU,
      flatten; with the default channels (16, 32, 64) a 7x7 view gives 64 features. It reads the raw symbolic
      values (object, colour and state indices, 0-10), so build the policy with ``normalize_images=False``;
      with SB3's default ``normalize_images=True`` the values arrive divided by 255 (tiny inputs, slower
      learning), which is the caller's choice. Channels-last (7, 7, 3) and channels-first (3, 7, 7) image
      spaces are both accepted; the layout is read from the observation space.
    - Direction: SB3 one-hot encodes ``Discrete(N)`` as a float (B, N) vector; a bias-free ``Linear(N, D)`` on
      it is an embedding table with D = ``direction_dim`` features. ``direction_dim=0`` disables it.
    - Mission (``mission_encoder``): ``"none"`` ignores it; ``"bow"`` is a bag of words, the mean of the word
      embeddings of the non-padding ids (``EmbeddingBag`` with ``padding_idx=0``), ``mission_embedding_dim``
      features; ``"gru"`` embeds the words and runs a one-layer GRU, returning the hidden state after the
      last non-padding word (``mission_hidden_dim`` features; zeros for an empty mission). Both are invariant
      to the amount of trailing padding. SB3 delivers the ids as floats; they are cast back with
      ``.long()``. The vocabulary size is ``observation_space["mission"].high.max() + 1``.

    ``features_dim`` = CNN features + ``direction_dim`` + mission features, computed at construction.

    ``output="set"`` emits a set of S elements of F = ``element_dim`` features instead, for cores that read a set
    (the RIMs paper, Goyal et al. 2021, Sec. 2.1-2.2: the input is "a set of elements", with position-specific
    keys and values from a CNN's feature map for spatial input):

    - Cells: each of the H * W cells is an element. Its object, colour and state indices each select a learned
      embedding (one table per channel, ``image.high.max() + 1`` rows), a learned embedding of the cell's position
      is added, and a shared per-cell network ``Linear(F, F)``, ReLU, ``Linear(F, F)`` maps the sum to the element.
      Per-cell embeddings, not a CNN: MiniGrid's symbolic cells already are one object each, so a cell is the
      element the paper's CNN positions stand for, and the position embedding keeps identical objects at
      different places apart (no ReLU after the last layer, so elements are not clipped to the null input's zeros).
      Cell ``(i, j)`` of the observation space's H x W view is element ``i * W + j``. The values must be the raw
      indices: build the policy with ``normalize_images=False``.
    - Direction (where ``direction_dim > 0``; F features, whatever ``direction_dim``): a bias-free
      ``Linear(N, F)`` on the one-hot direction, element H * W.
    - Mission (``mission_encoder != "none"``): the mission encoding through ``Linear(features, F)``, the last
      element; as invariant to trailing padding as the encoding.

    ``set_shape`` is ``(S, F)`` (``None`` with ``output="vector"``) and ``features_dim`` the flattened size S * F,
    which a core that reads vectors gets (the same features, flattened: a fair comparison).

    Inputs: ``observations``, a dict of tensors as prepared by SB3's ``preprocess_obs``:

    - ``image``: (B, H, W, C) or (B, C, H, W) float, following the observation space's layout
    - ``direction``: (B, N) or (B, 1, N) float one-hot, or (B,) indices (read when ``direction_dim > 0``)
    - ``mission``: (B, L) float word ids (only read when ``mission_encoder != "none"``)

    Output: (B, features_dim) float with ``output="vector"``, (B, S, F) with ``output="set"``.

    :param observation_space: Dict space with ``image`` (and ``direction`` / ``mission`` when used)
    :param cnn_channels: output channels (c1, c2, c3) of the three convolutions
    :param direction_dim: D, size of the direction embedding; 0 disables the direction input
    :param mission_encoder: ``"none"``, ``"bow"`` or ``"gru"``
    :param mission_embedding_dim: E, word-embedding size (``"bow"`` output size; ``"gru"`` input size)
    :param mission_hidden_dim: GRU hidden size (``"gru"`` output size)
    :param output: ``"vector"`` (the CNN, one feature vector) or ``"set"`` (a set of elements)
    :param element_dim: F, the size of every set element (``output="set"`` only)

    >>> import numpy as np
    >>> space = spaces.Dict({
    ...     "image": spaces.Box(0, 255, (7, 7, 3), np.uint8),
    ...     "direction": spaces.Discrete(4),
    ...     "mission": spaces.Box(0, 49, (20,), np.int64),
    ... })
    >>> extractor = MiniGridFeaturesExtractor(space, mission_encoder="gru")
    >>> extractor.features_dim  # 64 CNN + 8 direction + 64 GRU
    136
    >>> obs = {"image": torch.zeros(2, 7, 7, 3), "direction": torch.eye(4)[:2], "mission": torch.zeros(2, 20)}
    >>> extractor(obs).shape
    torch.Size([2, 136])
    >>> elements = MiniGridFeaturesExtractor(space, mission_encoder="gru", output="set", element_dim=16)
    >>> elements.set_shape, elements.features_dim  # 49 cells + direction + mission, 16 features each
    ((51, 16), 816)
    >>> elements(obs).shape
    torch.Size([2, 51, 16])
    """

    def __init__(
        self,
        observation_space: gym.Space,
        *,
        cnn_channels: Sequence[int] = (16, 32, 64),
        direction_dim: int = 8,
        mission_encoder: MissionEncoder = "none",
        mission_embedding_dim: int = 32,
        mission_hidden_dim: int = 64,
        output: ExtractorOutput = "vector",
        element_dim: int = 32,
    ) -> None:
        image_space, direction_space, mission_space = _check_space(
            observation_space, use_direction=direction_dim > 0, use_mission=mission_encoder != "none"
        )
        cnn_channels = tuple(int(c) for c in cnn_channels)
        if len(cnn_channels) != 3 or min(cnn_channels) < 1:
            raise ValueError(f"expected cnn_channels to be 3 positive ints, got {cnn_channels}")
        if direction_dim < 0:
            raise ValueError(f"expected direction_dim >= 0, got {direction_dim}")
        if mission_encoder not in MISSION_ENCODERS:
            raise ValueError(f"expected mission_encoder in {MISSION_ENCODERS}, got {mission_encoder!r}")
        if mission_embedding_dim < 1 or mission_hidden_dim < 1:
            raise ValueError(
                "expected mission_embedding_dim >= 1 and mission_hidden_dim >= 1, "
                f"got {mission_embedding_dim} and {mission_hidden_dim}"
            )
        if output not in EXTRACTOR_OUTPUTS:
            raise ValueError(f"expected output in {EXTRACTOR_OUTPUTS}, got {output!r}")
        if element_dim < 1:
            raise ValueError(f"expected element_dim >= 1, got {element_dim}")

        channels_first = is_image_space_channels_first(image_space)
        shape = image_space.shape
        in_channels, height, width = shape if channels_first else (shape[2], shape[0], shape[1])
        if min(height, width) < 4:
            raise ValueError(f"expected an image of at least 4x4 for the MiniGrid CNN, got {height}x{width}")
        n_mission = {"none": 0, "bow": mission_embedding_dim, "gru": mission_hidden_dim}[mission_encoder]
        cnn: nn.Sequential | None = None
        set_shape: tuple[int, int] | None = None
        if output == "vector":
            c1, c2, c3 = cnn_channels
            cnn = nn.Sequential(
                nn.Conv2d(in_channels, c1, (2, 2)),
                nn.ReLU(),
                nn.MaxPool2d((2, 2)),
                nn.Conv2d(c1, c2, (2, 2)),
                nn.ReLU(),
                nn.Conv2d(c2, c3, (2, 2)),
                nn.ReLU(),
                nn.Flatten(),
            )
            with torch.no_grad():
                n_image = int(cnn(torch.zeros(1, in_channels, height, width)).shape[1])
            features_dim = n_image + direction_dim + n_mission
        else:
            n_image = height * width * element_dim
            set_shape = (height * width + (direction_dim > 0) + (mission_encoder != "none"), element_dim)
            features_dim = set_shape[0] * element_dim
        super().__init__(observation_space, features_dim=features_dim)

        self.channels_first = channels_first
        self.cnn_channels = cnn_channels
        self.direction_dim = direction_dim
        self.mission_encoder = mission_encoder
        self.mission_embedding_dim = mission_embedding_dim
        self.mission_hidden_dim = mission_hidden_dim
        self.output = output
        self.element_dim = element_dim
        self.set_shape = set_shape
        self.image_features_dim = n_image
        self.cnn = cnn

        self.cell_embedding: nn.Embedding | None = None
        self.position_embedding: nn.Embedding | None = None
        self.cell_net: nn.Sequential | None = None
        if set_shape is not None:
            self.image_values = int(image_space.high.max()) + 1
            self.cell_embedding = nn.Embedding(in_channels * self.image_values, element_dim)  # a table per channel
            self.position_embedding = nn.Embedding(height * width, element_dim)
            self.cell_net = nn.Sequential(
                nn.Linear(element_dim, element_dim), nn.ReLU(), nn.Linear(element_dim, element_dim)
            )

        self.direction_embedding: nn.Linear | None = None
        if direction_space is not None:
            n_direction = direction_dim if set_shape is None else element_dim
            self.direction_embedding = nn.Linear(int(direction_space.n), n_direction, bias=False)

        self.vocab_size = 0
        self.word_bag: nn.EmbeddingBag | None = None
        self.word_embedding: nn.Embedding | None = None
        self.mission_gru: nn.GRU | None = None
        if mission_space is not None:
            self.vocab_size = int(mission_space.high.max()) + 1
            if mission_encoder == "bow":
                self.word_bag = nn.EmbeddingBag(self.vocab_size, mission_embedding_dim, mode="mean", padding_idx=0)
            else:
                self.word_embedding = nn.Embedding(self.vocab_size, mission_embedding_dim, padding_idx=0)
                self.mission_gru = nn.GRU(mission_embedding_dim, mission_hidden_dim, batch_first=True)
        self.mission_projection: nn.Linear | None = None
        if set_shape is not None and mission_space is not None:
            self.mission_projection = nn.Linear(n_mission, element_dim)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """:param observations: dict with ``image`` (B, H, W, C) or (B, C, H, W), ``direction`` (B, N) one-hot
            and ``mission`` (B, L) word ids, all float as prepared by SB3
        :return: features, (B, features_dim); with ``output="set"``, elements (B, S, F)
        """
        image = observations["image"].float()
        parts = [self.encode_cells(image) if self.cnn is None else self.cnn(self._channels_first(image))]
        if self.direction_embedding is not None:
            n_directions = self.direction_embedding.in_features
            # SB3 gives (B, N) one-hot at rollout time but (B, 1, N) from its rollout buffer (Discrete obs are
            # stored with shape (1,)); raw indices (B,) or (B, 1) are one-hot encoded here.
            direction = observations["direction"].reshape(image.shape[0], -1)
            if direction.shape[1] != n_directions:
                direction = nn.functional.one_hot(direction[:, 0].long(), n_directions)
            parts.append(self.direction_embedding(direction.float()))
        if self.mission_encoder != "none":
            parts.append(self.encode_mission(observations["mission"]))
        if self.set_shape is None:
            return torch.cat(parts, dim=1)
        if self.mission_projection is not None:
            parts[-1] = self.mission_projection(parts[-1])
        return torch.cat([parts[0], *(part.unsqueeze(1) for part in parts[1:])], dim=1)

    def _channels_first(self, image: torch.Tensor) -> torch.Tensor:
        """:param image: (B, H, W, C) or (B, C, H, W), the observation space's layout
        :return: (B, C, H, W)
        """
        return image if self.channels_first else image.permute(0, 3, 1, 2)

    def encode_cells(self, image: torch.Tensor) -> torch.Tensor:
        """The cells as set elements (``output="set"``): channel embeddings plus position embedding, then the
        per-cell network.

        :param image: (B, H, W, C) or (B, C, H, W) raw indices, float or integer
        :return: (B, H * W, F), cell ``(i, j)`` at ``i * W + j``
        """
        if self.cell_embedding is None or self.position_embedding is None or self.cell_net is None:
            raise RuntimeError(f"output={self.output!r} has no cell encoder")
        cells = self._channels_first(image).flatten(2).transpose(1, 2).long()  # (B, H * W, C)
        offsets = torch.arange(cells.shape[2], device=cells.device) * self.image_values  # channel c's table
        summed = self.cell_embedding(cells + offsets).sum(dim=2) + self.position_embedding.weight  # (B, H * W, F)
        return self.cell_net(summed)

    def encode_mission(self, mission: torch.Tensor) -> torch.Tensor:
        """Encode word ids (0 = trailing padding).

        :param mission: (B, L) word ids, float or integer
        :return: (B, mission_embedding_dim) for ``"bow"``, (B, mission_hidden_dim) for ``"gru"``
        """
        ids = mission.long()
        if self.word_bag is not None:
            return self.word_bag(ids)
        if self.word_embedding is None or self.mission_gru is None:
            raise RuntimeError(f"mission_encoder={self.mission_encoder!r} has no mission encoder")
        outputs, _ = self.mission_gru(self.word_embedding(ids))  # (B, L, hidden)
        lengths = (ids != 0).sum(dim=1)  # (B,)
        # GRU output at the last real word: later (padding) steps cannot influence it, so this equals the
        # final hidden state of the unpadded sequence (what pack_padded_sequence gives) without a device sync.
        last = (lengths - 1).clamp(min=0)
        hidden = outputs[torch.arange(ids.shape[0], device=ids.device), last]  # (B, hidden)
        return hidden * (lengths > 0).unsqueeze(1).to(hidden.dtype)

    def extra_repr(self) -> str:
        return (
            f"image_features={self.image_features_dim}, direction_dim={self.direction_dim}, "
            f"mission_encoder={self.mission_encoder!r}, vocab_size={self.vocab_size}, "
            f"features_dim={self.features_dim}" + (f", set_shape={self.set_shape}" if self.set_shape else "")
        )


def _check_space(
    observation_space: gym.Space, *, use_direction: bool, use_mission: bool
) -> tuple[spaces.Box, spaces.Discrete | None, spaces.Box | None]:
    """Validate the Dict observation space; return its (image, direction, mission) sub-spaces or None."""
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(
            "expected a Dict observation space with keys 'image', 'direction', 'mission' "
            f"(wrap MiniGrid envs with rims_rl.envs.MissionToIdsWrapper), got {observation_space}"
        )
    keys = set(observation_space.spaces)
    needed = {"image"} | ({"direction"} if use_direction else set()) | ({"mission"} if use_mission else set())
    missing = sorted(needed - keys)
    if missing:
        hint = []
        if "direction" in missing:
            hint.append("direction_dim=0 disables 'direction'")
        if "mission" in missing:
            hint.append("mission_encoder='none' disables 'mission'")
        raise ValueError(
            f"expected observation space keys {sorted(needed)}, got {sorted(keys)} (missing {missing}"
            + (f"; {', '.join(hint)})" if hint else ")")
        )
    image = observation_space["image"]
    if not isinstance(image, spaces.Box) or len(image.shape) != 3:
        raise ValueError(f"expected 'image' to be a 3-d Box (H, W, C) or (C, H, W), got {image}")
    direction = observation_space["direction"] if use_direction else None
    if direction is not None and not isinstance(direction, spaces.Discrete):
        raise ValueError(f"expected 'direction' to be a Discrete space, got {direction}")
    mission = observation_space["mission"] if use_mission else None
    if mission is not None and (not isinstance(mission, spaces.Box) or len(mission.shape) != 1):
        raise ValueError(f"expected 'mission' to be a 1-d Box of word ids (L,), got {mission}")
    return image, direction, mission
