"""Tests of ``RIM`` and ``RIMCell``: against nn.LSTM / nn.GRU shapes and a plain per-unit reference step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import unit_recurrence
from torch import nn

from rims_rl import RIM, RIMCell, make_core, map_state

F_IN, H, U, K = 5, 12, 4, 2
SMALL = dict(input_key_size=8, comm_key_size=4, comm_heads=2)
BASELINES = {"lstm": nn.LSTM, "gru": nn.GRU}


def make_rim(cell: str = "lstm", **kwargs) -> RIM:
    torch.manual_seed(0)
    return RIM(F_IN, H, num_units=U, k=K, cell=cell, **{**SMALL, **kwargs})


def random_state(rim: RIM, batch: int):
    return map_state(torch.randn_like, rim.initial_state(batch))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("form", ["time_major", "batch_first", "unbatched"])
def test_shapes_match_torch(cell: str, num_layers: int, form: str) -> None:
    batch_first = form == "batch_first"
    rim = make_rim(cell, num_layers=num_layers, batch_first=batch_first)
    ref = BASELINES[cell](F_IN, H, num_layers=num_layers, batch_first=batch_first)
    x = {"time_major": torch.randn(7, 3, F_IN), "batch_first": torch.randn(3, 7, F_IN)}.get(form, torch.randn(7, F_IN))
    for hx in (None, map_state(lambda t: t[:, 0] if form == "unbatched" else t, rim.initial_state(3))):
        out, state = rim(x, hx)
        ref_out, ref_state = ref(x, hx)
        assert out.shape == ref_out.shape
        assert [t.shape for t in map_state(lambda t: t, state)] == [t.shape for t in map_state(lambda t: t, ref_state)]
        assert type(state) is type(ref_state)
        assert rim.last_active.shape == (7, 1 if form == "unbatched" else 3, num_layers, U)
        assert rim.last_active.dtype == torch.bool


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_exactly_k_units_change_and_inactive_state_is_bit_exact(cell: str) -> None:
    rim = make_rim(cell, num_layers=2)
    hx = random_state(rim, 6)
    for x in torch.randn(5, 1, 6, F_IN):
        _, new = rim(x, hx)
        active = rim.last_active[0]  # (B, L, U)
        assert (active.sum(-1) == K).all()
        for old_t, new_t in zip(*(s if isinstance(s, tuple) else (s,) for s in (hx, new)), strict=True):
            changed = (old_t.unflatten(-1, (U, -1)) != new_t.unflatten(-1, (U, -1))).any(-1)  # (L, B, U)
            assert torch.equal(changed, active.permute(1, 0, 2))
        hx = new


@pytest.mark.parametrize("input_heads", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_matches_per_unit_reference(cell: str, input_heads: int) -> None:
    torch.manual_seed(0)
    rim_cell = RIMCell(F_IN, H, U, K, cell=cell, input_heads=input_heads, **SMALL)
    x, h, c = torch.randn(4, F_IN), torch.randn(4, H), torch.randn(4, H)
    hx = (h, c) if cell == "lstm" else h
    expected, expected_active = reference_step(rim_cell, x, h, c)
    got = rim_cell(x, hx)
    torch.testing.assert_close(got[0] if cell == "lstm" else got, expected[0], rtol=1e-5, atol=1e-5)
    if cell == "lstm":
        torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-5)
    assert torch.equal(rim_cell.last_active, expected_active)


def reference_step(cell: RIMCell, x, h, c):
    """The paper's step written plainly: explicit null slot, a loop over units, dense attention."""
    b, u_n, s, hi, dk, dv = (
        x.shape[0],
        cell.num_units,
        cell.unit_size,
        cell.input_heads,
        8,
        cell.input_value_size,
    )
    hu, cu = h.view(b, u_n, s), c.view(b, u_n, s)
    key_in = (x @ cell.weight_key).view(b, hi, dk)
    value_in = torch.einsum("bf,hfv->bhv", x, cell.weight_value) + cell.bias_value.view(hi, dv)
    keys = torch.stack([torch.zeros_like(key_in), key_in], 2)  # (B, Hi, 2, dk), the null key is zero
    values = torch.stack([cell.bias_value.view(hi, dv).expand(b, hi, dv), value_in], 2)  # (B, Hi, 2, dv)
    cand_h, cand_c, null_attn = [], [], []
    for u in range(u_n):
        proj = hu[:, u] @ cell.weight_hh[u] + cell.bias_hh[u, 0]
        q, gates_h = proj[:, : hi * dk].view(b, hi, 1, dk), proj[:, hi * dk :]
        p = torch.softmax((q * keys).sum(-1) / math.sqrt(dk), -1)  # (B, Hi, 2)
        null_attn.append(p[..., 0].mean(-1))
        read = (p.unsqueeze(-1) * values).sum(2).flatten(1)  # (B, Hi * dv)
        gates_x = read @ cell.weight_ih[:, :, u].flatten(0, 1) + cell.bias_ih[u, 0]
        new_h, new_c = unit_recurrence(cell.cell, gates_x, gates_h, hu[:, u], cu[:, u])
        cand_h.append(new_h)
        if new_c is not None:
            cand_c.append(new_c)
    active = torch.zeros(b, u_n, dtype=torch.bool)
    active.scatter_(1, torch.stack(null_attn, 1).topk(K, dim=1, largest=False).indices, True)
    cand = torch.stack(cand_h, 1)  # (B, U, s)
    hc, dkc, dvc = cell.comm_heads, cell.comm_key_size, cell.comm_value_size
    qkv = torch.stack([cand[:, u] @ cell.weight_comm[u] + cell.bias_comm[u, 0] for u in range(u_n)], 1)
    q, k, v = (t.unflatten(-1, (hc, -1)).transpose(1, 2) for t in qkv.split([hc * dkc, hc * dkc, hc * dvc], -1))
    read = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, U, Hc * dv)
    comm = torch.stack([read[:, u] @ cell.weight_out[u] + cell.bias_out[u, 0] for u in range(u_n)], 1)
    new_h = torch.where(active.unsqueeze(-1), cand + comm, hu).flatten(1)
    new_c = torch.where(active.unsqueeze(-1), torch.stack(cand_c, 1), cu).flatten(1) if cand_c else None
    return (new_h, new_c), active


@pytest.mark.parametrize("batch_first", [False, True])
def test_episode_starts_equal_a_fresh_sequence(batch_first: bool) -> None:
    rim = make_rim(num_layers=2, batch_first=batch_first).eval()
    x, hx = torch.randn(6, 3, F_IN), random_state(rim, 3)
    starts = torch.zeros(6, 3, dtype=torch.bool)
    starts[3, 1] = True
    swap = (lambda t: t.transpose(0, 1)) if batch_first else (lambda t: t)
    out, state = rim(swap(x), hx, episode_starts=swap(starts))
    out, active = swap(out), rim.last_active
    plain, _ = rim(swap(x), hx)
    plain = swap(plain)
    fresh, fresh_state = rim(swap(x[3:, 1:2]))
    torch.testing.assert_close(out[3:, 1:2], swap(fresh), rtol=0, atol=1e-6)
    torch.testing.assert_close(map_state(lambda t: t[:, 1:2], state), fresh_state, rtol=0, atol=1e-6)
    assert torch.equal(active[3:, 1:2], rim.last_active)
    assert torch.equal(out[:, [0, 2]], plain[:, [0, 2]]) and torch.equal(out[:3], plain[:3])
    assert not torch.allclose(out[3:, 1], plain[3:, 1])


def test_unbatched_episode_starts() -> None:
    rim = make_rim(cell="gru")
    x = torch.randn(6, F_IN)
    starts = torch.tensor([False, False, True, False, False, False])
    out, _ = rim(x, torch.randn(1, H), episode_starts=starts)
    torch.testing.assert_close(out[2:], rim(x[2:])[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chunks_carrying_state_equal_one_call(cell: str) -> None:
    rim = make_rim(cell, num_layers=2)
    x, hx = torch.randn(9, 3, F_IN), random_state(rim, 3)
    out, state = rim(x, hx)
    active = rim.last_active
    first, mid = rim(x[:4], hx)
    first_active = rim.last_active
    second, end = rim(x[4:], mid)
    torch.testing.assert_close(torch.cat([first, second]), out, rtol=0, atol=1e-6)
    torch.testing.assert_close(end, state, rtol=0, atol=1e-6)
    assert torch.equal(torch.cat([first_active, rim.last_active]), active)


def test_gradients_reach_input_and_parameters() -> None:
    rim = make_rim(num_layers=2)
    x = torch.randn(6, 4, F_IN, requires_grad=True)
    out, _ = rim(x)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in rim.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_inactive_unit_gets_no_gradient_through_its_candidate() -> None:
    rim = make_rim()
    cell = rim.cells[0]
    out, _ = rim(torch.randn(1, 1, F_IN), random_state(rim, 1))
    out.sum().backward()
    active = rim.last_active[0, 0, 0]
    assert active.sum() == K
    per_unit = {  # parameters that only reach the output through unit u's candidate state
        "weight_hh": lambda g, u: g[u],
        "bias_hh": lambda g, u: g[u],
        "weight_ih": lambda g, u: g[:, :, u],
        "bias_ih": lambda g, u: g[u],
        "weight_out": lambda g, u: g[u],
        "bias_out": lambda g, u: g[u],
    }
    for name, unit_part in per_unit.items():
        grad = getattr(cell, name).grad
        for u in range(U):
            assert bool((unit_part(grad, u) != 0).any()) == bool(active[u]), (name, u)


def test_seeded_construction_and_forward_are_deterministic() -> None:
    x = torch.randn(5, 2, F_IN)
    a, b = make_rim(dropout=0.3).train(), make_rim(dropout=0.3).train()
    torch.manual_seed(1)
    out_a, _ = a(x)
    torch.manual_seed(1)
    out_b, _ = b(x)
    assert torch.equal(out_a, out_b)


def test_dropout_only_in_train() -> None:
    rim = make_rim(num_layers=2, dropout=0.5)
    x = torch.randn(5, 4, F_IN)
    rim.eval()
    assert torch.equal(rim(x)[0], rim(x)[0])
    rim.train()
    assert not torch.equal(rim(x)[0], rim(x)[0])
    no_dropout = make_rim(num_layers=2)
    assert torch.equal(no_dropout.train()(x)[0], no_dropout.eval()(x)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(hidden_size=13), r"hidden_size divisible by num_units.*hidden_size=13, num_units=4"),
        (dict(k=0), r"1 <= k <= num_units=4, got k=0"),
        (dict(k=5), r"1 <= k <= num_units=4, got k=5"),
        (dict(cell="rnn"), r"unknown cell 'rnn'; expected one of 'lstm', 'gru'"),
        (dict(hidden_size=0), r"hidden_size > 0, got hidden_size=0"),
        (dict(input_key_size=-1), r"input_key_size > 0, got input_key_size=-1"),
        (dict(num_layers=0), r"num_layers > 0, got num_layers=0"),
        (dict(dropout=1.0), r"dropout in \[0, 1\), got dropout=1.0"),
        (dict(dropout=-0.1), r"dropout in \[0, 1\), got dropout=-0.1"),
        (dict(k=2.5), r"expected an int k with 1 <= k <= num_units=4, got k=2.5"),
        (dict(k=True), r"expected an int k with 1 <= k <= num_units=4, got k=True"),
        (dict(num_units=2.0), r"expected an int num_units > 0, got num_units=2.0"),
        (dict(comm_heads=0.5), r"expected an int comm_heads > 0, got comm_heads=0.5"),
        (dict(num_layers=1.5), r"expected an int num_layers > 0, got num_layers=1.5"),
        (dict(dropout="0.1"), r"dropout in \[0, 1\), got dropout='0.1'"),
        (dict(batch_first=3), r"expected batch_first true or false, got batch_first=3"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    args = {"input_size": F_IN, "hidden_size": H, "num_units": U, "k": K, **kwargs}
    with pytest.raises(ValueError, match=match):
        RIM(**args)


@pytest.mark.parametrize("core", ["rim", "lstm", "gru"])
def test_shape_errors_show_the_callers_layout(core: str) -> None:
    """A batch_first core given ``episode_starts`` time-major names the (B, T) it expected and the (T, B) it got, as
    the caller laid them out (not transposed); an unbatched input's ``hx`` is checked as ``(L, H)``."""
    kwargs = {"num_units": U, "k": K} if core == "rim" else {}
    module = make_core(core, F_IN, hidden_size=H, batch_first=True, **kwargs)
    x = torch.randn(5, 9, F_IN)  # (B, T, F)
    with pytest.raises(ValueError, match=r"^expected episode_starts of shape \(5, 9\), \(B, T\) .*, got \(9, 5\)$"):
        module(x, episode_starts=torch.zeros(9, 5, dtype=torch.bool))
    if core == "rim":
        state = (torch.zeros(1, 1, H), torch.zeros(1, 1, H))
        with pytest.raises(
            ValueError, match=r"^expected hx tensors of shape \(1, 12\), \(L, H\) .*, got \(1, 1, 12\)$"
        ):
            module(torch.randn(9, F_IN), state)


def test_bad_state_shape_raises() -> None:
    rim = make_rim(num_layers=2)
    with pytest.raises(ValueError, match=r"expected hx tensors of shape \(2, 3, 12\).*got \(1, 3, 12\)"):
        rim(torch.randn(4, 3, F_IN), (torch.zeros(1, 3, H), torch.zeros(1, 3, H)))


def test_initial_state_and_repr() -> None:
    rim = make_rim("gru", num_layers=3)
    state = rim.initial_state(5)
    assert isinstance(state, torch.Tensor) and state.shape == (3, 5, H) and not state.any()
    h, c = make_rim().initial_state(2, dtype=torch.float64)
    assert h.shape == c.shape == (1, 2, H) and h.dtype == torch.float64 and h.data_ptr() != c.data_ptr()
    assert repr(rim).startswith("RIM(\n  5, 12, num_units=4, k=2, cell='gru', num_layers=3")
    assert "input_value_size=12" in repr(rim.cells[0]) and "comm_value_size=3" in repr(rim.cells[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rim = make_rim(num_layers=2).eval()
    x, hx = torch.randn(6, 3, F_IN), random_state(rim, 3)
    starts = torch.zeros(6, 3, dtype=torch.bool)
    starts[2, 0] = True
    out, state = rim(x, hx, episode_starts=starts)
    active = rim.last_active
    gpu = rim.cuda()
    out_gpu, state_gpu = gpu(x.cuda(), map_state(lambda t: t.cuda(), hx), episode_starts=starts.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(map_state(lambda t: t.cpu(), state_gpu), state, rtol=1e-4, atol=1e-4)
    assert torch.equal(gpu.last_active.cpu(), active)
