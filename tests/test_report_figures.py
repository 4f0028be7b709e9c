"""``rims-rl-report``'s figures and Markdown: the figures a report draws, what the Markdown embeds, logging them to
W&B, and a report on real runs made with the training CLI."""

from __future__ import annotations

import doctest
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from handwritten import HELDOUT, REPS, final_row, read_csv, runs_column, write_run, write_sweep
from helpers import Run, clean_env, ok

import rims_rl.experiments.report
import rims_rl.experiments.report.cli
import rims_rl.experiments.report.figures
import rims_rl.experiments.report.markdown
from rims_rl.experiments.report.figures import FIGURES, plt
from rims_rl.experiments.report.options import Options
from rims_rl.experiments.report.runs import find_runs, label_runs
from rims_rl.experiments.selection import load_episodes, raster_figure


@pytest.mark.parametrize(
    "module",
    [
        rims_rl.experiments.report,
        rims_rl.experiments.report.figures,
        rims_rl.experiments.report.markdown,
        rims_rl.experiments.report.cli,
    ],
)
def test_doctests(module: Any) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_wandb_logs_figures_and_tables_offline(tmp_path: Path, run_cli: Run) -> None:
    sweep = write_sweep(tmp_path, wandb=True)
    proc = run_cli("rims_rl.experiments.report", [str(sweep), "--reps", REPS, "--wandb"], WANDB_MODE="offline")
    ok(proc)
    (run_file,) = (sweep / "report" / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    for name in (b"report/empty_return", b"report/empty_final", b"report/empty_improvement", b"w10", b"report"):
        assert name in data


def test_wandb_without_ids_warns_and_writes_the_report(tmp_path: Path, run_cli: Run) -> None:
    sweep = write_sweep(tmp_path)
    proc = run_cli("rims_rl.experiments.report", [str(sweep), "--reps", REPS, "--wandb"], WANDB_MODE="offline")
    ok(proc)
    assert "no run has a W&B id" in proc.stderr
    assert (sweep / "report" / "report.md").exists() and not (sweep / "report" / "wandb").exists()


def test_markdown_embeds_the_figures_drawn_and_only_those(tmp_path: Path) -> None:
    """Unit activity is drawn for any run that logs it (a capability, whatever the model is called)."""
    write_run(tmp_path / "with" / "0", "lstm64", 0, [100, 200])
    write_run(tmp_path / "with" / "1", "mycore64_u4_k2", 0, [100, 200], units=4)
    write_run(tmp_path / "without" / "0", "lstm64", 0, [100, 200])
    for name in ("with", "without"):
        rims_rl.experiments.report.main([str(tmp_path / name), "--reps", REPS])
    with_md = (tmp_path / "with" / "report" / "report.md").read_text()
    without_md = (tmp_path / "without" / "report" / "report.md").read_text()
    assert "![empty unit activity](empty_unit_activity.png)" in with_md
    assert (tmp_path / "with" / "report" / "empty_unit_activity.svg").exists()
    assert (
        "unit_activity" not in without_md and not (tmp_path / "without" / "report" / "empty_unit_activity.png").exists()
    )
    for md in (with_md, without_md):
        assert md.index("(empty_return.png)") < md.index("(empty_success.png)") < md.index("### Final")
    # Neither recorded rasters; only the run with units has a selection table (its switch rates "not logged").
    assert "selection_raster" not in with_md + without_md
    assert (
        "### Unit selection" not in without_md
        and not (tmp_path / "without" / "report" / "empty_selection.csv").exists()
    )
    assert "| `mycore64_u4_k2` | not logged | not logged | not logged | not logged | not logged |" in with_md


def test_the_report_flags_static_selection_and_embeds_the_rasters(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", "lstm64", 0, [100, 200])
    write_run(sweep / "1", "rim64_u4_k3", 0, [100, 200], units=4, switch_rate=0.0, raster=True)
    write_run(sweep / "2", "rim64_u4_k3", 1, [100, 200], units=4, switch_rate=0.3, raster=True)
    write_run(sweep / "3", "rim64_u4_k3", 2, [100, 200], units=4, switch_rate=0.005)
    write_run(sweep / "4", "rim64_u4_k3", 3, [100, 200], units=4)  # from before switch rates were logged
    write_run(sweep / "5", "rim32_u4_k2", 0, [100, 200], units=4)
    rims_rl.experiments.report.main([str(sweep), "--reps", REPS])
    out = sweep / "report"
    md = (out / "report.md").read_text()
    rows = {row["model"]: row for row in read_csv(out / "empty_selection.csv")}
    assert set(rows) == {"rim64_u4_k3", "rim32_u4_k2"}  # the LSTM reports no units
    rim = rows["rim64_u4_k3"]
    assert (rim["static_runs"], rim["logged_runs"], rim["runs"]) == ("2", "3", "4")  # switch rates 0 and 0.005
    assert float(rim["heldout_switch_rate_mean"]) == pytest.approx(0.305 / 3)
    assert float(rim["train_selection_entropy_mean"]) == pytest.approx(0.61 / 3)
    assert (rows["rim32_u4_k2"]["train_switch_rate_mean"], rows["rim32_u4_k2"]["logged_runs"]) == ("", "0")
    assert "| `rim64_u4_k3` | 0.102 | 0.102 | 0.203 | 0.203 | 2/3 (1 not logged) |" in md
    assert "| `rim32_u4_k2` | not logged | not logged | not logged | not logged | not logged |" in md
    assert "Static selection: `rim64_u4_k3` seed 0, `rim64_u4_k3` seed 2." in md
    flags = runs_column(md, "rim64_u4_k3", "selection")
    assert flags == ["**static selection**", "dynamic", "**static selection**", "not logged"]
    # The first seed's raster of each model that recorded one.
    assert "![empty selection rasters](empty_selection_raster.png)" in md
    assert (out / "empty_selection_raster.png").stat().st_size > 1000


def test_a_figure_added_to_the_list_is_drawn_and_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def frames_per_run(split: str, groups: dict[str, list[Any]], opts: Any) -> Any:
        fig, ax = plt.subplots()
        ax.bar(list(groups), [max(run.last_eval_frames for run in runs) for runs in groups.values()])
        return fig

    extra = rims_rl.experiments.report.figures.Figure("frames", "frames per model", frames_per_run)
    monkeypatch.setattr(
        rims_rl.experiments.report.figures, "FIGURES", [*rims_rl.experiments.report.figures.FIGURES, extra]
    )
    sweep = write_sweep(tmp_path, seeds=1)
    rims_rl.experiments.report.main([str(sweep), "--reps", REPS])
    assert (sweep / "report" / "empty_frames.png").stat().st_size > 1000
    assert "![empty frames per model](empty_frames.png)" in (sweep / "report" / "report.md").read_text()


@pytest.mark.slow
def test_report_on_real_tiny_sweep(tmp_path: Path, run_cli: Run) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "env=empty",
        "model=lstm,rim",
        "model.hidden_size=12",
        "seed=0,1",
        "agent.n_steps=16",
        "agent.sequence_length=16",
        "agent.batch_size=32",
        "n_envs=2",
        "total_frames=256",
        "eval.every_frames=128",
        "eval.episodes=1",
        "eval.final_episodes=2",
        "checkpoint.every_frames=256",
        f"env.heldout=[{HELDOUT[1]}]",
        f"hydra.sweep.dir={sweep}",
    ]
    ok(run_cli("rims_rl.experiments.train", args, timeout=600, WANDB_MODE="offline"))
    infos = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/run_info.json")}
    assert len(infos) == 4

    out = tmp_path / "report"
    script = Path(sys.executable).parent / "rims-rl-report"  # the console script, when the package is installed
    command = [str(script)] if script.exists() else [sys.executable, "-m", "rims_rl.experiments.report"]
    proc = subprocess.run(
        [*command, str(sweep), "--out", str(out), "--reps", REPS, "--wandb"],
        cwd=tmp_path,
        env=clean_env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    ok(proc)
    for name in ("empty_return.png", "empty_return.svg", "empty_success.png", "report.md", "empty_final.csv"):
        assert (out / name).exists(), name
    # The sweep has a RIM model: its activation patterns come as a figure, embedded in the report.
    assert (out / "empty_unit_activity.png").stat().st_size > 1000
    assert "(empty_unit_activity.png)" in (out / "report.md").read_text()
    # ... and so do its selection rasters and its switch rates (the LSTM has none).
    assert (out / "empty_selection_raster.png").stat().st_size > 1000
    assert "(empty_selection_raster.png)" in (out / "report.md").read_text()
    rim_labels = {info["model"] for info in infos.values() if info["core"] == "rim"}
    assert [row["model"] for row in read_csv(out / "empty_selection.csv")] == sorted(rim_labels)
    rows = read_csv(out / "empty_final.csv")
    labels = {info["model"] for info in infos.values()}
    assert {r["model"] for r in rows} == labels and len(labels) == 2
    for label in labels:
        finals = [
            [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if "eval/heldout" in line][
                -1
            ]["eval/heldout/return_mean"]
            for path, info in infos.items()
            if info["model"] == label
        ]
        row = final_row(rows, label, "heldout", "return")
        assert row["n_seeds"] == "2"
        assert float(row["mean"]) == pytest.approx(np.mean(finals))
    md = (out / "report.md").read_text()
    assert "Published vs ours" not in md  # tiny models: no published numbers to set beside them
    assert "Episodes per env id and action mode: 2 in the final evaluation (the final scores); 1 at the curves'" in md
    for info in infos.values():
        assert info["wandb_id"] in md
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


#: Env ids and model labels longer than any shipped one (a panel's title holds one or several).
LONG_ENVS = (
    ["MiniGrid-ObstructedMaze-Full-v1-with-a-long-suffix", "MiniGrid-DoorKey-16x16-v0-with-another-long-suffix"],
    ["MiniGrid-ObstructedMaze-Full-v1-with-a-long-suffix-heldout", "MiniGrid-KeyCorridorS6R3-v0-long"],
)
LONG_MODELS = ["lstm64", "rim192_u6_k4_set_with_a_very_long_model_label", "rim192_u6_k4_with_another_long_label"]


def overlapping_texts(fig: Any) -> list[tuple[str, str]]:
    """:param fig: a drawn figure
    :return: the pairs of drawn, non-empty texts (titles, axis and tick labels, legend entries) whose boxes on the
        canvas overlap (boxes that only touch do not)
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    undrawn = set()  # the tick labels matplotlib keeps but does not draw: outside the view, or of an axes turned off
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not (ax.axison and low - 1e-9 * (high - low) <= tick.get_loc() <= high + 1e-9 * (high - low)):
                    undrawn |= {id(tick.label1), id(tick.label2)}
    texts = [t for t in fig.findobj(plt.Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def test_no_figure_has_overlapping_text_at_long_env_names_and_labels(tmp_path: Path) -> None:
    """Every figure of the report and a run's own raster, drawn for envs and models with long names."""
    for i, (model, seed) in enumerate(itertools.product(LONG_MODELS, range(2))):
        units = 0 if model.startswith("lstm") else 6
        write_run(tmp_path / str(i), model, seed, [100, 200], "a_long_split_name", units=units, raster=bool(units),
                  envs=LONG_ENVS)  # fmt: skip
    runs = find_runs([tmp_path])
    groups = label_runs(runs)
    figures = [(figure.name, figure.draw("a_long_split_name", groups, Options(reps=int(REPS)))) for figure in FIGURES]
    figures.append(("run raster", raster_figure(load_episodes(runs[-1].path), "a run's long title " * 6)))
    assert all(fig is not None for _, fig in figures)  # every figure type has something to show here
    overlaps = {name: pairs for name, fig in figures if (pairs := overlapping_texts(fig))}
    for _, fig in figures:
        plt.close(fig)
    assert overlaps == {}
