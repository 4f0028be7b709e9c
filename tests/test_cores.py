"""Tests of LSTMCore, GRUCore and make_core."""

from __future__ import annotations

import itertools

import pytest
import torch

from rims_rl import RIM, GRUCore, LSTMCore, make_core, map_state

F_IN, H = 5, 8


def segments_separately(core, x, hx, starts):
    """Reference: run every (sample, episode) segment as its own call, time-major ``(T, B, F)``."""
    outputs, finals = [], []
    for b in range(x.shape[1]):
        state = map_state(lambda t: t[:, b : b + 1], hx)  # noqa: B023  # used at once
        bounds = [0, *(t for t in range(1, x.shape[0]) if starts[t, b]), x.shape[0]]
        pieces = []
        for i, (t0, t1) in enumerate(itertools.pairwise(bounds)):
            seq = x[t0:t1, b : b + 1]
            start_fresh = i > 0 or bool(starts[0, b])
            out, state = core(seq.transpose(0, 1) if core.batch_first else seq, None if start_fresh else state)
            pieces.append(out.transpose(0, 1) if core.batch_first else out)
        outputs.append(torch.cat(pieces))
        finals.append(state)
    return torch.cat(outputs, 1), map_state(lambda *ts: torch.cat(ts, 1), *finals)


@pytest.mark.parametrize("core_class", [LSTMCore, GRUCore])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_episode_starts_equal_segments_run_separately(core_class, batch_first: bool, num_layers: int) -> None:
    torch.manual_seed(0)
    core = core_class(F_IN, H, num_layers=num_layers, batch_first=batch_first)
    x = torch.randn(7, 3, F_IN)
    hx = map_state(torch.randn_like, core.initial_state(3))
    starts = torch.zeros(7, 3, dtype=torch.bool)
    starts[0, 2] = starts[3, 0] = starts[5, 0] = starts[2, 1] = True
    swap = (lambda t: t.transpose(0, 1)) if batch_first else (lambda t: t)
    out, state = core(swap(x), hx, episode_starts=swap(starts))
    expected, expected_state = segments_separately(core, x, hx, starts)
    torch.testing.assert_close(swap(out), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(state, expected_state, rtol=0, atol=1e-6)


@pytest.mark.parametrize("core_class", [LSTMCore, GRUCore])
def test_resets_only_at_start_and_no_resets(core_class) -> None:
    torch.manual_seed(0)
    core = core_class(F_IN, H)
    x, hx = torch.randn(4, 2, F_IN), map_state(torch.randn_like, core.initial_state(2))
    starts = torch.zeros(4, 2, dtype=torch.bool)
    assert torch.equal(core(x, hx, episode_starts=starts)[0], core(x, hx)[0])
    starts[0, 1] = True
    out, _ = core(x, hx, episode_starts=starts)
    assert torch.equal(out[:, 0], core(x, hx)[0][:, 0])
    torch.testing.assert_close(out[:, 1:], core(x[:, 1:])[0], rtol=0, atol=1e-6)


def test_unbatched_episode_starts() -> None:
    torch.manual_seed(0)
    core = GRUCore(F_IN, H)
    x = torch.randn(5, F_IN)
    out, _ = core(x, torch.randn(1, H), episode_starts=torch.tensor([False, False, True, False, False]))
    torch.testing.assert_close(out[2:], core(x[2:])[0], rtol=0, atol=1e-6)


def test_initial_state() -> None:
    h, c = LSTMCore(F_IN, H, num_layers=2).initial_state(3)
    assert h.shape == c.shape == (2, 3, H) and not h.any() and h.data_ptr() != c.data_ptr()
    assert GRUCore(F_IN, H).initial_state(4).shape == (1, 4, H)


@pytest.mark.parametrize(("name", "expected"), [("lstm", LSTMCore), ("gru", GRUCore), ("rim", RIM)])
def test_make_core(name: str, expected: type) -> None:
    core = make_core(name, F_IN, hidden_size=12, **({"num_units": 4, "k": 2} if name == "rim" else {}))
    assert type(core) is expected and core.hidden_size == 12
    out, _ = core(torch.randn(3, 2, F_IN))
    assert out.shape == (3, 2, 12)


def test_make_core_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown core 'transformer'; expected one of 'lstm', 'gru', 'rim'"):
        make_core("transformer", F_IN, hidden_size=H)


@pytest.mark.parametrize("kwargs", [dict(bidirectional=True), dict(proj_size=4)])
def test_cores_refuse_bidirectional_and_projection(kwargs):
    with pytest.raises(ValueError, match="unidirectional core without projection"):
        make_core("lstm", 8, hidden_size=16, **kwargs)
