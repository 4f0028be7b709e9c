"""``rims-rl-report``'s numbers: reading runs, curves across seeds, IQM and improvement tables, checked exactly on
hand-written run directories (real input files, in the runner's format); the published numbers."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from handwritten import REPS, final_row, read_csv, runs_column, score_of, write_run, write_sweep
from helpers import Run, ok

import rims_rl.experiments.published
import rims_rl.experiments.report
import rims_rl.experiments.report.options
import rims_rl.experiments.report.runs
import rims_rl.experiments.report.stats
import rims_rl.experiments.report.tables
from rims_rl.experiments.published import DIDO_TABLE
from rims_rl.experiments.report import Run as ReportRun
from rims_rl.experiments.report import iqm, mean_curve, probability_of_improvement


@pytest.mark.parametrize(
    "module",
    [
        rims_rl.experiments.report.runs,
        rims_rl.experiments.report.stats,
        rims_rl.experiments.report.options,
        rims_rl.experiments.report.tables,
        rims_rl.experiments.published,
    ],
)
def test_doctests(module: Any) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_rliable_imports() -> None:
    from rliable import library, metrics

    assert callable(library.get_interval_estimates) and callable(metrics.aggregate_iqm)


def test_mean_curve_interpolates_onto_common_frames_and_bands_contain_the_mean() -> None:
    seeds = [
        (np.array([10.0, 20.0, 30.0]), np.array([0.0, 1.0, 2.0])),
        (np.array([12.0, 22.0, 32.0]), np.array([1.0, 1.0, 1.0])),
    ]
    band = mean_curve(seeds, reps=200, rng=np.random.default_rng(0))
    assert band is not None and band.n == 2
    assert band.frames.tolist() == [12.0, 20.0, 22.0, 30.0]  # the frames both seeds cover
    assert np.allclose(band.mean, [(0.2 + 1) / 2, 1.0, (1.2 + 1) / 2, (2 + 1) / 2])
    assert np.all(band.low <= band.mean + 1e-12) and np.all(band.mean <= band.high + 1e-12)
    single = mean_curve(seeds[:1], reps=10, rng=np.random.default_rng(0))
    assert single is not None and single.n == 1 and np.array_equal(single.low, single.high)


def test_the_cis_depend_on_the_seed_alone_and_leave_numpys_global_rng_as_it_was() -> None:
    # rliable 1.2 resamples with numpy's global RNG whatever random_state it is given; the report seeds that RNG.
    x, y = np.linspace(0.0, 1.0, 7)[:, None], np.linspace(0.2, 0.9, 5)[:, None]
    cis = []
    for draws in (1, 2):
        np.random.seed(draws)  # a different global state before each pair of calls
        before = np.random.get_state()[1].copy()
        cis.append((iqm(x, reps=200, seed=3), probability_of_improvement(x, y, reps=200, seed=3)))
        assert np.array_equal(np.random.get_state()[1], before)
    assert cis[0] == cis[1]
    assert iqm(x, reps=200, seed=4) != cis[0][0]  # the seed does pick the resamples


def test_final_is_last_eval_or_mean_of_last_n(tmp_path: Path) -> None:
    write_run(tmp_path / "r", "lstm64", 0, [100, 200, 300])
    run = rims_rl.experiments.report.load_run(tmp_path / "r")
    key = "eval/heldout/return_mean"
    assert run.final(key) == score_of("lstm64", 0, 300, "heldout", "return_mean")
    expected = np.mean([score_of("lstm64", 0, f, "heldout", "return_mean") for f in (200, 300)])
    assert run.final(key, final_evals=2) == pytest.approx(expected)
    assert isinstance(run, ReportRun) and run.last_eval_frames == 300


def test_published_numbers_cover_the_dido_table() -> None:
    assert set(DIDO_TABLE.values) == {"empty", "multiroom", "doorkey"}
    assert DIDO_TABLE.values["multiroom"]["MiniGrid-MultiRoom-N4-S5-v1"] == {
        "rim64_u4_k3": 0.66,
        "rim64_u4_k2": 0.10,
        "lstm64": 0.04,
    }
    assert DIDO_TABLE.values["doorkey"]["MiniGrid-DoorKey-16x16-v0"]["rim64_u4_k2"] == 0.13
    for by_env in DIDO_TABLE.values.values():
        for by_model in by_env.values():
            assert set(by_model) == {"lstm64", "rim64_u4_k3", "rim64_u4_k2"}


def test_report_cli_on_handwritten_runs(tmp_path: Path, run_cli: Run) -> None:
    sweep = write_sweep(tmp_path)
    proc = run_cli("rims_rl.experiments.report", [str(sweep), "--reps", REPS])
    ok(proc)
    out = sweep / "report"
    assert proc.stdout.strip() == str(out / "report.md")
    for name in ("empty_return", "empty_success"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")

    rows = read_csv(out / "empty_final.csv")
    assert {r["model"] for r in rows} == {"lstm64", "rim64_u4_k3"}
    for model in ("lstm64", "rim64_u4_k3"):
        for scope, stat, name in [
            ("train", "return", "return_mean"),
            ("heldout", "return", "return_mean"),
            ("heldout", "success", "success_rate"),
            ("MiniGrid-Empty-16x16-v0", "return", "return_mean"),
        ]:
            row = final_row(rows, model, scope, stat)
            finals = [score_of(model, seed, 300, scope, name) for seed in (0, 1)]
            assert int(row["n_seeds"]) == 2
            assert float(row["mean"]) == pytest.approx(np.mean(finals))
            assert float(row["iqm_low"]) <= float(row["iqm"]) <= float(row["iqm_high"])
            assert min(finals) - 1e-9 <= float(row["iqm_low"]) and float(row["iqm_high"]) <= max(finals) + 1e-9
    assert float(final_row(rows, "lstm64", "MiniGrid-Empty-16x16-v0", "return")["published"]) == 0.84
    assert final_row(rows, "lstm64", "MiniGrid-Empty-6x6-v0", "return")["published"] == ""

    (improvement,) = [r for r in read_csv(out / "empty_improvement.csv") if r["stat"] == "return"]
    assert (improvement["x"], improvement["y"]) == ("rim64_u4_k3", "lstm64")
    assert float(improvement["probability"]) == 1.0  # every rim score is above every lstm score here

    md = (out / "report.md").read_text()
    assert "![empty return](empty_return.png)" in md
    assert "Published vs ours: dido_table" in md
    assert "| `Empty-16x16` | `lstm64` | 0.84 |" in md
    assert "| `Empty-5x5` | `rim64_u4_k2` | 0.92 | — |" in md  # a published model without runs
    assert "`rim64_u4_k3` | `lstm64` | return | 1.000" in md
    assert md.count("| `lstm64` | ppo |") == 2 and "300" in md


def test_greedy_final_evals_single_seed_and_split_without_published(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    write_run(sweep / "a", "lstm64", 0, [100, 200, 300], split="other")
    write_run(sweep / "b", "rim64_u4_k3", 3, [100, 200, 300], split="other")
    out = tmp_path / "out"
    rims_rl.experiments.report.main([str(sweep), "--out", str(out), "--greedy", "--final-evals", "2", "--reps", REPS])
    row = final_row(read_csv(out / "other_final.csv"), "lstm64", "heldout", "return")
    expected = np.mean([score_of("lstm64", 0, f, "heldout", "greedy_return_mean") for f in (200, 300)])
    assert float(row["mean"]) == pytest.approx(expected)
    assert row["iqm"] == row["iqm_low"] == row["iqm_high"] and row["n_seeds"] == "1"
    md = (out / "report.md").read_text()
    assert "greedy-action" in md and "mean of its last 2 evaluations" in md
    assert "n=1, no CI" in md
    assert "Published vs ours" not in md


def test_the_report_states_the_episode_counts_of_final_scores_and_curve_points(tmp_path: Path) -> None:
    write_run(tmp_path / "new" / "0", "lstm64", 0, [100, 200, 300])
    write_run(tmp_path / "old" / "0", "lstm64", 0, [100, 200, 300])  # logged before eval/episodes existed
    # The new run as rims-rl-train logs it now: 10 episodes per curve point, 100 in the final evaluation.
    path = tmp_path / "new" / "0" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        if "eval/train/return_mean" in row:
            row.update({"eval/episodes": 100, "eval/final": 1} if row["frames"] == 300 else {"eval/episodes": 10})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def counts_line(sweep: str, *args: str) -> str:
        out = tmp_path / f"{sweep}{len(args)}"
        rims_rl.experiments.report.main([str(tmp_path / sweep), "--out", str(out), "--reps", REPS, *args])
        (line,) = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("Episodes")]
        return line

    def expected(final: str, curve: str, behind: str = "the final evaluation") -> str:
        head = "Episodes per env id and action mode:"
        return f"{head} {final} in {behind} (the final scores); {curve} at the curves' other points."

    assert counts_line("new") == expected("100", "10")
    assert counts_line("new", "--final-evals", "2") == expected("10, 100", "10", "the last 2 evaluations")
    unknown = "not recorded (runs from before `eval/episodes` was logged: their `eval.episodes`, 10 by default)"
    assert counts_line("old") == expected(unknown, unknown)
    # The final score is still the last row: the final evaluation.
    run = ReportRun(tmp_path / "new" / "0", {}, rows)
    assert run.final("eval/heldout/return_mean") == score_of("lstm64", 0, 300, "heldout", "return_mean")
    assert run.episodes() == ({100}, {10}) and run.episodes(final_evals=2) == ({10, 100}, {10})


def test_the_report_names_the_step_cap_of_evaluations_that_had_one(tmp_path: Path) -> None:
    write_run(tmp_path / "capped" / "0", "lstm64", 0, [100, 200, 300])
    write_run(tmp_path / "capped" / "1", "lstm64", 1, [100, 200, 300])
    path = tmp_path / "capped" / "0" / "metrics.jsonl"  # seed 0 evaluated with eval.max_steps=500, seed 1 without
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        if "eval/train/return_mean" in row:
            row["eval/max_steps"] = 500
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    rims_rl.experiments.report.main([str(tmp_path / "capped"), "--out", str(out), "--reps", REPS])
    (line,) = [line for line in (out / "report.md").read_text().splitlines() if "cap on episode steps" in line]
    assert line.endswith(
        ": 500 steps, no cap in the final evaluation (the final scores); 500 steps, no cap at the curves' other points."
    )
    rims_rl.experiments.report.main([str(tmp_path / "capped" / "1"), "--out", str(tmp_path / "out1"), "--reps", REPS])
    assert "cap on episode steps" not in (tmp_path / "out1" / "report.md").read_text()  # no cap: no line


def test_several_dirs_and_nested_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "a" / "deep" / "er" / "0", "lstm64", 0, [100, 200])
    write_run(tmp_path / "b" / "0", "lstm64", 1, [100, 200])
    write_run(tmp_path / "b" / "1", "lstm64", 2, [100, 200], agent="a2c")
    rims_rl.experiments.report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--reps", REPS])
    rows = read_csv(tmp_path / "a" / "report" / "empty_final.csv")
    assert {r["model"] for r in rows} == {"lstm64 (ppo)", "lstm64 (a2c)"}  # agents mixed: labelled apart
    assert final_row(rows, "lstm64 (ppo)", "train", "return")["n_seeds"] == "2"


def test_runs_of_both_backends_are_labelled_apart(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "0", "lstm64", 0, [100, 200])  # saved before backends existed: torch
    write_run(tmp_path / "runs" / "1", "lstm64", 1, [100, 200], backend="torch")
    write_run(tmp_path / "runs" / "2", "lstm64", 0, [100, 200], backend="jax")
    write_run(tmp_path / "runs" / "3", "lstm64", 1, [100, 200], backend="jax", agent="a2c")
    rims_rl.experiments.report.main([str(tmp_path / "runs"), "--reps", REPS])
    rows = read_csv(tmp_path / "runs" / "report" / "empty_final.csv")
    assert {r["model"] for r in rows} == {"lstm64 (ppo, torch)", "lstm64 (ppo, jax)", "lstm64 (a2c, jax)"}
    assert final_row(rows, "lstm64 (ppo, torch)", "train", "return")["n_seeds"] == "2"


def test_published_numbers_only_beside_runs_of_a_published_model(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "0", "lstm192", 0, [100, 200])  # the empty split has published numbers, not for it
    rims_rl.experiments.report.main([str(tmp_path / "runs"), "--reps", REPS])
    assert "Published vs ours" not in (tmp_path / "runs" / "report" / "report.md").read_text()


def test_label_by_tells_runs_apart_by_their_overrides(tmp_path: Path) -> None:
    overrides = {"0": [], "1": ["agent.normalize_advantage=true", "seed=1"], "2": ["~agent.clip_range_vf", "seed=2"]}
    for name, lines in overrides.items():
        write_run(tmp_path / "runs" / name, "rim64_u4_k3", int(name), [100, 200])
        if lines:
            (tmp_path / "runs" / name / ".hydra").mkdir()
            (tmp_path / "runs" / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in lines))
    rims_rl.experiments.report.main([str(tmp_path / "runs"), "--reps", REPS, "--out", str(tmp_path / "pooled")])
    assert {r["model"] for r in read_csv(tmp_path / "pooled" / "empty_final.csv")} == {"rim64_u4_k3"}
    rims_rl.experiments.report.main(
        [str(tmp_path / "runs"), "--reps", REPS, "--label-by", "agent.", "--out", f"{tmp_path}/a"]
    )
    rows = read_csv(tmp_path / "a" / "empty_final.csv")
    labels = {"rim64_u4_k3", "rim64_u4_k3 (normalize_advantage=true)", "rim64_u4_k3 (~clip_range_vf)"}
    assert {r["model"] for r in rows} == labels  # seed=1 is not under agent.: not in the label
    assert final_row(rows, "rim64_u4_k3 (normalize_advantage=true)", "train", "return")["n_seeds"] == "1"
    assert "under `agent.`" in (tmp_path / "a" / "report.md").read_text()


def test_a_report_keeps_its_runs_and_is_an_input_once_the_run_dirs_are_gone(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, seeds=2)
    write_run(sweep / "4", "rim64_u4_k3", 2, [100, 200, 300], units=3, switch_rate=0.2)
    first, again, more = tmp_path / "first", tmp_path / "again", tmp_path / "more"
    rims_rl.experiments.report.main([str(sweep), "--out", str(first), "--reps", REPS])
    kept = [json.loads(line) for line in (first / "runs.jsonl").read_text().splitlines()]
    assert sorted(record["path"] for record in kept) == [f"../sweep/{name}" for name in "01234"]
    assert all(any(key.startswith("eval/") for key in row) for record in kept for row in record["rows"])
    assert sum(len(record["rows"]) for record in kept) == 5 * 3  # the eval rows, not the SB3 rows between them
    md = (first / "report.md").read_text()
    for stat, name in [("return_mean", "final return"), ("success_rate", "final success rate")]:  # per run
        finals = [
            [score_of("rim64_u4_k3", seed, 300, scope, stat) for scope in ("train", "heldout")] for seed in range(3)
        ]
        assert runs_column(md, "rim64_u4_k3", f"{name}, train / held-out") == [f"{a:.3f} / {b:.3f}" for a, b in finals]

    shutil.rmtree(sweep)
    rims_rl.experiments.report.main([str(first), "--out", str(again), "--reps", REPS])
    for name in ("empty_final.csv", "empty_improvement.csv", "empty_selection.csv"):
        assert (again / name).read_text() == (first / name).read_text(), name
    assert (again / "empty_unit_activity.png").is_file()  # the unit activity is in the eval rows
    assert (again / "report.md").read_text().split("### Runs")[1] == md.split("### Runs")[1]

    # Extended by a new seed; a run found both kept and as a directory is read from the directory.
    write_run(tmp_path / "new" / "0", "lstm64", 7, [100, 200, 300])
    write_run(sweep / "0", "lstm64", 0, [100, 200, 300, 400])
    rims_rl.experiments.report.main([str(again), str(tmp_path / "new"), str(sweep), "--out", str(more), "--reps", REPS])
    rows = read_csv(more / "empty_final.csv")
    assert final_row(rows, "lstm64", "train", "return")["n_seeds"] == "3"
    finals = [
        score_of("lstm64", seed, frames, "train", "return_mean") for seed, frames in [(0, 400), (1, 300), (7, 300)]
    ]
    assert float(final_row(rows, "lstm64", "train", "return")["mean"]) == pytest.approx(np.mean(finals))
    assert len((more / "runs.jsonl").read_text().splitlines()) == 6

    # Only a report given as a DIR brings its runs: a sweep's own report/ does not bring back a deleted run.
    rims_rl.experiments.report.main([str(sweep), "--reps", REPS])
    write_run(sweep / "1", "lstm64", 1, [100, 200])
    shutil.rmtree(sweep / "0")
    rims_rl.experiments.report.main([str(sweep), "--reps", REPS])
    assert [json.loads(line)["path"] for line in (sweep / "report" / "runs.jsonl").read_text().splitlines()] == ["../1"]


@pytest.mark.parametrize("case", ["empty", "missing", "no_eval", "bad_kept_runs"])
def test_dir_without_runs_fails_with_one_clear_line(tmp_path: Path, case: str, run_cli: Run) -> None:
    target = tmp_path / "nothing"
    if case != "missing":
        target.mkdir()
        (target / "notes.txt").write_text("not a run")
    if case == "bad_kept_runs":  # a report dir whose runs.jsonl has a line without rows
        (target / "runs.jsonl").write_text('{"path": "../0", "info": {}}\n')
    if case == "no_eval":
        write_run(target / "0", "lstm64", 0, [100])
        lines = (target / "0" / "metrics.jsonl").read_text().splitlines()
        (target / "0" / "metrics.jsonl").write_text(lines[0] + "\n")  # an SB3 row only
    proc = run_cli("rims_rl.experiments.report", [str(target)])
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "warning" not in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rims-rl-report: error: ") and str(target) in lines[0]
    assert ("line 1: not a kept run (KeyError: 'rows')" in lines[0]) == (case == "bad_kept_runs"), lines[0]
    assert not (target / "report").exists()


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [
        ("--reps", "0", "[1, 1000000]"),
        ("--reps", "1e9", "[1, 1000000]"),
        ("--final-evals", "2.5", "[1, 1000000]"),
        ("--seed", "-1", "[0, 4294967295]"),
    ],
)
def test_bad_flag_values_fail_with_one_line(tmp_path: Path, flag: str, value: str, allowed: str, capsys) -> None:
    """The flags' bounds (rims_rl.experiments.limits) are checked before any run is read, in one line without the
    usage."""
    write_run(tmp_path / "0", "lstm64", 0, [100])
    with pytest.raises(SystemExit) as info:
        rims_rl.experiments.report.main([str(tmp_path), flag, value])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"rims-rl-report: error: argument {flag}: expected a whole number in {allowed}, got '{value}'"
    assert not (tmp_path / "report").exists()
