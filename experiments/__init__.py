"""Hydra runners of rims-rl, one module per command: ``rims-rl-train`` (:mod:`rims_rl.experiments.train`),
``rims-rl-eval`` (:mod:`rims_rl.experiments.evaluate`) and ``rims-rl-report`` (the :mod:`rims_rl.experiments.report`
package), with the thin, tested parts they wire together: :mod:`rims_rl.experiments.schema` (every config key,
documented and checked), :mod:`rims_rl.experiments.config` (config checking, in one place),
:mod:`rims_rl.experiments.builders` (agent and envs from a config), :mod:`rims_rl.experiments.eval_loop` (evaluation on
the train and held-out envs), :mod:`rims_rl.experiments.checkpoint`, :mod:`rims_rl.experiments.metrics` and
:mod:`rims_rl.experiments.published`.

Only this package imports hydra; ``rims_rl``, ``agents`` and ``envs`` never do.
"""
