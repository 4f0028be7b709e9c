"""Hydra runners of rims-rl: ``rims-rl-train`` (:mod:`experiments.train`) and ``rims-rl-eval``
(:mod:`experiments.evaluate`), with the thin, tested parts they wire together.

Only this package imports hydra; ``rims_rl``, ``agents`` and ``envs`` never do.
"""
