"""Render one picture of every train and held-out env of every split (``configs/env/*.yaml``) for the docs' splits
page: MiniGrid's full-grid rendering (the agent's view highlighted) at a fixed level seed, small tiles.

Run from the repository root; the PNGs are committed (``docs/_static/splits/<split>__<env id>[__seed<s>].png``)::

    python docs/scripts/render_splits.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import matplotlib.image
import yaml

from rims_rl.envs import register_envs

ROOT = Path(__file__).resolve().parents[2]
TILE = 12  # pixels per grid cell: a 16x16 grid is 192 px wide


def picture_name(split: str, env_id: str, seed: int | None) -> str:
    """:return: the PNG's file name for ``env_id`` of ``split`` rendered at level ``seed`` (``None``: seed 0)"""
    return f"{split}__{env_id}" + ("" if seed is None else f"__seed{seed}") + ".png"


def pictures(config: dict) -> list[tuple[str, str, int | None]]:
    """:return: (side, env id, level seed or None) for each env of a split config; a split with level seeds is
    drawn at its first train seed and its first held-out seed"""
    out: list[tuple[str, str, int | None]] = []
    for side in ("train", "heldout"):
        ids = config[side] if isinstance(config[side], list) else [config[side]]
        seeds = config.get(f"{side}_seeds")
        out += [(side, env_id, seeds[0] if seeds else None) for env_id in ids]
    return out


def render(env_id: str, seed: int | None, path: Path) -> None:
    """Write ``env_id``'s first observation after ``reset(seed=seed or 0)`` as a PNG of the whole grid."""
    env = gym.make(env_id)
    env.reset(seed=0 if seed is None else seed)
    frame = env.unwrapped.get_frame(highlight=True, tile_size=TILE)  # type: ignore[attr-defined]
    env.close()
    matplotlib.image.imsave(path, frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_static" / "splits")
    args = parser.parse_args()
    register_envs()
    args.out.mkdir(parents=True, exist_ok=True)
    for config_path in sorted((ROOT / "configs" / "env").glob("*.yaml")):
        config = yaml.safe_load(config_path.read_text())
        for _, env_id, seed in pictures(config):
            path = args.out / picture_name(config["name"], env_id, seed)
            render(env_id, seed, path)
            print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
