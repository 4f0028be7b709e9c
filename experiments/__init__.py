"""Hydra runners of rims-rl, one module per command: ``rims-rl-train`` (:mod:`experiments.train`), ``rims-rl-eval``
(:mod:`experiments.evaluate`) and ``rims-rl-report`` (the :mod:`experiments.report` package), with the thin, tested
parts they wire together: :mod:`experiments.schema` (every config key, documented and checked),
:mod:`experiments.config` (config checking, in one place), :mod:`experiments.builders` (agent and envs from a
config), :mod:`experiments.eval_loop` (evaluation on the train and held-out envs), :mod:`experiments.checkpoint`,
:mod:`experiments.metrics` and :mod:`experiments.published`.

Only this package imports hydra; ``rims_rl``, ``agents`` and ``envs`` never do.
"""
