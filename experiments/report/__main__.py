"""``python -m rims_rl.experiments.report``: the same as ``rims-rl-report``."""

from rims_rl.experiments.report.cli import main

main()
