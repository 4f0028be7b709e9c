"""``python -m experiments.report``: the same as ``rims-rl-report``."""

from experiments.report.cli import main

main()
