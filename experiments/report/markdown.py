"""The Markdown of a report (``report.md``): the settings, then per split the figures it drew, the final-score
tables, published numbers beside ours, the probability of improvement, the unit selection and the runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from rims_rl.experiments.eval_loop import MAX_STEPS
from rims_rl.experiments.published import Published, for_split
from rims_rl.experiments.report.options import STAT_NAMES, Options
from rims_rl.experiments.report.runs import HELDOUT, TRAIN, Run, relative_path, short_env, split_envs
from rims_rl.experiments.report.split import SplitReport
from rims_rl.experiments.report.stats import Estimate
from rims_rl.experiments.report.tables import STATIC_SWITCH_RATE, FinalRow, SelectionRow, static_selection


def _fmt(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def _ci(est: Estimate) -> str:
    if est.n < 2:
        return f"{est.value:.3f} (n=1, no CI)" if est.n == 1 else "—"
    return f"{est.value:.3f} [{est.low:.3f}, {est.high:.3f}]"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def markdown(reports: Sequence[SplitReport], dirs: Sequence[Path], opts: Options, out: Path) -> str:
    """The text of ``report.md``.

    :param reports: one per split
    :param dirs: the directories the runs came from
    :param opts: report options
    :param out: the output directory (links are relative to it)
    """
    kind = "greedy-action" if opts.greedy else "sampled-action"
    final = "its last evaluation" if opts.final_evals == 1 else f"the mean of its last {opts.final_evals} evaluations"
    prefixes = ", ".join(f"`{prefix}`" for prefix in opts.label_by)
    lines = [
        "# rims-rl report",
        "",
        f"Runs from: {', '.join(f'`{d}`' for d in dirs)}.",
        "",
        f"Scores are {kind} statistics (`{opts.key('<scope>', 'return').split('/')[-1]}`, "
        f"`{opts.key('<scope>', 'success').split('/')[-1]}`). A run's final score is {final}. "
        "Curves: mean across seeds of each seed's eval curve (interpolated onto the frames all seeds cover) with a "
        "95% percentile-bootstrap band across seeds. Tables: interquartile mean (IQM) with a 95% stratified-bootstrap "
        f"CI ({opts.reps} resamples, rliable), mean and standard deviation across seeds. With one seed there is no CI."
        + (f" Model labels add the overrides a run was started with under {prefixes}." if opts.label_by else ""),
        "",
    ]
    for rep in reports:
        runs = [run for group in rep.groups.values() for run in group]
        train, heldout = split_envs(runs)
        selected = {row.model for row in rep.selection}
        lines += [
            f"## Split `{rep.split}`",
            "",
            f"Train: {', '.join(f'`{e}`' for e in train)}; held-out: {', '.join(f'`{e}`' for e in heldout)}.",
            "",
            _episodes_line(runs, opts.final_evals),
            "",
            *_cap_lines(runs, opts.final_evals),
        ]
        for figure in rep.figures:
            lines += [f"![{figure.title}]({relative_path(figure.png, out)})", ""]
        for stat, title in STAT_NAMES.items():
            lines += [f"### Final {title}: train and held-out (pooled)", ""]
            by = {(r.model, r.scope): r for r in rep.final if r.stat == stat}
            body = []
            for label in rep.groups:
                cells = [f"`{label}`"]
                n = 0
                for scope in (TRAIN, HELDOUT):
                    r = by.get((label, scope))
                    cells += [_ci(r.iqm), _fmt(r.mean)] if r else ["—", "—"]
                    n = max(n, r.n if r else 0)
                body.append([*cells, str(n)])
            lines += _md_table(
                ["model", "train IQM [95% CI]", "train mean", "held-out IQM [95% CI]", "held-out mean", "seeds"], body
            )
        lines += ["### Final return per env (mean ± std across seeds)", ""]
        env_scopes = [*train, *heldout]
        by = {(r.model, r.scope): r for r in rep.final if r.stat == "return"}
        body = []
        for label in rep.groups:
            cells = [f"`{label}`"]
            for scope in env_scopes:
                r = by.get((label, scope))
                cells.append(f"{r.mean:.3f} ± {r.std:.3f} (n={r.n})" if r else "—")
            body.append(cells)
        lines += _md_table(["model", *[f"{short_env(e)}{' (train)' if e in train else ''}" for e in env_scopes]], body)
        for ref in for_split(rep.split):
            lines += _published_section(ref, rep, by)
        lines += [f"### Probability that each model beats the `{opts.baseline}` baseline on the held-out envs", ""]
        if rep.improvement:
            lines += [
                "P(X > Y): the chance that a random run of X scores higher than a random run of Y on a held-out env "
                "(ties count half), averaged over the held-out envs; 95% CI from resampling each model's runs.",
                "",
            ]
            lines += _md_table(
                ["X", "Y", "score", "P(X > Y) [95% CI]", "seeds (min)"],
                [
                    [f"`{r.x}`", f"`{r.y}`", STAT_NAMES[r.stat], _ci(r.estimate), str(r.estimate.n)]
                    for r in rep.improvement
                ],
            )
        else:
            lines += [f"No comparison: this split needs a model with core `{opts.baseline}` and another model.", ""]
        if rep.selection:
            lines += _selection_section(rep)
        lines += ["### Runs", ""]
        lines += _md_table(
            [
                "model",
                "agent",
                "seed",
                "frames (last eval)",
                "total frames",
                *(f"final {STAT_NAMES[stat]}, train / held-out" for stat in STAT_NAMES),
                "selection",
                "W&B id",
                "run dir",
            ],
            [
                [
                    f"`{label}`",
                    str(run.info.get("agent", "—")),
                    str(run.seed),
                    str(run.last_eval_frames),
                    str(run.info.get("total_frames", "—")),
                    *(
                        " / ".join(_fmt(opts.score(run, scope, stat)) for scope in (TRAIN, HELDOUT))
                        for stat in STAT_NAMES
                    ),
                    _SELECTION_FLAGS[static_selection(run)] if label in selected else "—",
                    str(run.info.get("wandb_id") or "—"),
                    f"`{relative_path(run.path, out)}`",
                ]
                for label, group in rep.groups.items()
                for run in group
            ],
        )
        lines += [f"Tables as CSV: {', '.join(f'[{p.name}]({p.name})' for p in rep.tables)}.", ""]
    return "\n".join(lines)


#: The Runs table's selection cell of a run of a model that reports units, by :func:`static_selection`.
_SELECTION_FLAGS = {True: "**static selection**", False: "dynamic", None: "not logged"}


def _selection_section(rep: SplitReport) -> list[str]:
    """The unit-selection table of the models whose cores report units, and the runs flagged static."""
    lines = [
        "### Unit selection",
        "",
        "Models whose cores report their active units. Switch rate: the fraction of consecutive steps within an "
        "episode at which a layer's active set changes (a reset is not a switch); set entropy: the entropy in bits "
        "of the distribution of active sets over the evaluation steps (0: one fixed set), per layer, averaged over "
        "layers. Both at each run's last evaluation (sampled and greedy episodes), mean over the runs that logged "
        f"them. A run whose switch rate is below {STATIC_SWITCH_RATE:.0%} on both the train and the held-out envs "
        'is flagged "static selection". Runs from before these were logged: "not logged".',
        "",
    ]
    lines += _md_table(
        [
            "model",
            "train switch rate",
            "held-out switch rate",
            "train set entropy (bits)",
            "held-out set entropy (bits)",
            "static runs",
        ],
        [
            [
                f"`{row.model}`",
                *[
                    _logged(row, row.means[scope, stat])
                    for stat in ("switch_rate", "selection_entropy")
                    for scope in (TRAIN, HELDOUT)
                ],
                _static_share(row),
            ]
            for row in rep.selection
        ],
    )
    static = [
        f"`{label}` seed {run.seed}" for label, group in rep.groups.items() for run in group if static_selection(run)
    ]
    if static:
        lines += [f"Static selection: {', '.join(static)}.", ""]
    return lines


def _logged(row: SelectionRow, value: float) -> str:
    return "not logged" if row.logged == 0 else _fmt(value)


def _static_share(row: SelectionRow) -> str:
    """``"2/3"``, ``"1/2 (1 not logged)"`` or ``"not logged"``."""
    if row.logged == 0:
        return "not logged"
    missing = row.runs - row.logged
    return f"{row.static}/{row.logged}" + (f" ({missing} not logged)" if missing else "")


def _episodes_line(runs: Sequence[Run], final_evals: int) -> str:
    """The episode counts per env id behind the final scores and behind the curves' points, read from the rows."""
    final: set[int | None] = set()
    curve: set[int | None] = set()
    for run in runs:
        last, others = run.episodes(final_evals)
        final |= last
        curve |= others
    behind = "the final evaluation" if final_evals == 1 else f"the last {final_evals} evaluations"
    return (
        f"Episodes per env id and action mode: {_counts(final)} in {behind} (the final scores); "
        f"{_counts(curve)} at the curves' other points."
    )


def _cap_lines(runs: Sequence[Run], final_evals: int) -> list[str]:
    """A line (and a blank) naming the step caps of the evaluations (``eval/max_steps``), where any run had one."""
    final: set[int | None] = set()
    curve: set[int | None] = set()
    for run in runs:
        last, others = run.eval_settings(MAX_STEPS, final_evals)
        final |= last
        curve |= others
    if not (final | curve) - {None}:
        return []
    behind = "the final evaluation" if final_evals == 1 else f"the last {final_evals} evaluations"

    def caps(values: set[int | None]) -> str:
        parts = [f"{n} steps" for n in sorted(n for n in values if n is not None)]
        return ", ".join(parts + (["no cap"] if None in values else [])) or "none"

    return [
        f"**Evaluated with a cap on episode steps** (`eval.max_steps`; an episode cut there counts as a failure, "
        f"`capped_fraction` in the metrics): {caps(final)} in {behind} (the final scores); {caps(curve)} at the "
        f"curves' other points.",
        "",
    ]


def _counts(counts: set[int | None]) -> str:
    """``"100"``, ``"10, 20"``; a ``None`` count reads "not recorded" (runs logged before ``eval/episodes``)."""
    parts = [str(n) for n in sorted(n for n in counts if n is not None)]
    if None in counts:
        parts.append("not recorded (runs from before `eval/episodes` was logged: their `eval.episodes`, 10 by default)")
    return ", ".join(parts) or "none"


def _published_section(ref: Published, rep: SplitReport, by: dict[tuple[str, str], FinalRow]) -> list[str]:
    """The published numbers of ``ref`` beside ours; nothing when no run is of a model ``ref`` publishes."""
    values = ref.values[rep.split]
    if not any((label, env_id) in by for env_id, by_model in values.items() for label in by_model):
        return []
    lines = [
        f"### Published vs ours: {ref.name}",
        "",
        f"Source: {ref.source}; metric: {ref.metric}. They match ours when the runs used the same protocol "
        f"(`experiment={ref.name}` presets); ours: final return as above, mean across seeds.",
        "",
    ]
    body = []
    for env_id, by_model in values.items():
        for label, value in by_model.items():
            ours = by.get((label, env_id))
            body.append(
                [
                    f"`{short_env(env_id)}`",
                    f"`{label}`",
                    f"{value:.2f}",
                    _fmt(ours.mean) if ours else "—",
                    _ci(ours.iqm) if ours else "—",
                    str(ours.n) if ours else "0",
                ]
            )
    return lines + _md_table(["env", "model", "published", "ours (mean)", "ours IQM [95% CI]", "seeds"], body)
