"""Tests of ``rims_rl.jax``: numerically equal to the torch RIM (outputs, states, selected units, gradients), the
Flax cell contract, JAX transforms, conversion both ways, and a clean import graph.

JAX runs on the CPU, one thread (tests/conftest.py), so float32 results compare with torch's to 1e-5.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")

from rims_rl import RIM as TorchRIM  # noqa: E402  # after the skip: these tests need jax
from rims_rl.jax import RIM, RIMCell, from_torch, to_torch, torch_tie_order  # noqa: E402

F_IN, H, U, K = 5, 12, 4, 2
SMALL = dict(input_key_size=8, comm_key_size=4, comm_heads=2)


def torch_rim(cell: str = "lstm", **kwargs) -> TorchRIM:
    torch.manual_seed(0)
    return TorchRIM(F_IN, H, num_units=U, k=K, cell=cell, **{**SMALL, **kwargs}).eval()


def to_jax(tree):
    return jax.tree.map(lambda t: jnp.asarray(t.detach().numpy()), tree)


@partial(jax.jit, static_argnames=("module", "deterministic"))
def apply(module: RIM, variables, x, hx=None, starts=None, deterministic=None, rngs=None):
    """``module.apply`` under jit (compiled once per configuration and shapes): ``(output, state, active)``."""
    (out, state), extra = module.apply(
        variables, x, hx, episode_starts=starts, deterministic=deterministic, rngs=rngs, mutable="intermediates"
    )
    return out, state, extra["intermediates"]["active"][0]


def run_both(rim: TorchRIM, x: torch.Tensor, hx=None, starts: torch.Tensor | None = None):
    """Run ``rim`` and its conversion on the same input; return both ``(output, state, active)`` as numpy."""
    module, variables = from_torch(rim)
    out, state = rim(x, hx, episode_starts=starts)
    expected = jax.tree.map(lambda t: t.detach().numpy(), (out, state, rim.last_active))
    got = apply(module, variables, to_jax(x), to_jax(hx), to_jax(starts))
    return expected, jax.tree.map(np.asarray, got)


def assert_same(expected, got, tol: float = 1e-5) -> None:
    (out, state, active), (j_out, j_state, j_active) = expected, got
    assert type(j_state) is type(state)
    np.testing.assert_allclose(j_out, out, rtol=tol, atol=tol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol), j_state, state)
    np.testing.assert_array_equal(j_active, active)


SEVERAL_HEADS = dict(input_heads=2, comm_heads=3, input_value_size=7, comm_value_size=5, comm_key_size=6)
CASES = {  # id: (cell, num_layers, input form, other arguments); each case compiles once
    "lstm-1-time_major": ("lstm", 1, "time_major", {}),
    "lstm-2-batch_first": ("lstm", 2, "batch_first", {}),
    "gru-1-unbatched": ("gru", 1, "unbatched", {}),
    "gru-2-several_heads": ("gru", 2, "time_major", SEVERAL_HEADS),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_equal_to_torch_with_resets(case: tuple) -> None:
    cell, num_layers, form, kwargs = case
    rim = torch_rim(cell, num_layers=num_layers, batch_first=form == "batch_first", **kwargs)
    x, starts = torch.randn(7, 3, F_IN), torch.zeros(7, 3, dtype=torch.bool)  # time-major
    starts[3, 1] = starts[5, 0] = True
    hx = tuple(torch.randn(num_layers, 3, H) for _ in range(2)) if cell == "lstm" else torch.randn(num_layers, 3, H)
    if form == "unbatched":
        x, starts, hx = x[:, 0], starts[:, 0], jax.tree.map(lambda t: t[:, 0], hx)
    to_input = (lambda t: t.transpose(0, 1)) if form == "batch_first" else (lambda t: t)
    expected, got = run_both(rim, to_input(x), hx, to_input(starts))
    assert_same(expected, got)
    out, _, active = got  # active: (T, B, L, U), always time-major
    assert (active.sum(-1) == K).all()
    # Inactive units keep h bit for bit (last layer, steps without a reset).
    out = to_input(torch.tensor(out)).reshape(7, -1, U, H // U)  # time-major, per unit
    kept = (out[1:] == out[:-1]).all(-1).numpy()  # (T - 1, B, U)
    no_reset = ~starts[1:].reshape(6, -1).numpy()
    np.testing.assert_array_equal(kept[no_reset], ~active[1:, :, -1][no_reset])


def test_full_ties_select_the_units_torch_selects() -> None:
    """A zero input gives every unit the same score; the choice must still be torch's."""
    torch.manual_seed(0)
    rim = TorchRIM(F_IN, 24, num_units=6, k=4, **SMALL).eval()
    expected, got = run_both(rim, torch.zeros(3, 2, F_IN))
    assert_same(expected, got)
    assert got[2][0, 0, 0].nonzero()[0].tolist() == [0, 3, 4, 5] == sorted(torch_tie_order(6, 4)[:4])


def test_tie_order_matches_torch_topk() -> None:
    for units in range(1, 11):
        for k in range(1, units + 1):
            chosen = torch.zeros(units).topk(k).indices.tolist()
            assert set(torch_tie_order(units, k)[:k]) == set(chosen), (units, k)
    chosen = torch.zeros(128).topk(2).indices.tolist()  # 64 k <= U: std::partial_sort's path
    assert set(torch_tie_order(128, 2)[:2]) == set(chosen) == {0, 1}


def test_gradients_equal_torch() -> None:
    rim = torch_rim(num_layers=2, input_heads=2)
    x = torch.randn(6, 3, F_IN, requires_grad=True)
    starts = torch.zeros(6, 3, dtype=torch.bool)
    starts[2, 1] = True
    hx = tuple(torch.randn(2, 3, H) for _ in range(2))
    out, (h, c) = rim(x, hx, episode_starts=starts)
    (out.square().sum() + h.sum() + c.square().sum()).backward()
    module, variables = from_torch(rim)

    def loss(variables, x):
        out, (h, c) = module.apply(variables, x, to_jax(hx), episode_starts=to_jax(starts))
        return jnp.square(out).sum() + h.sum() + jnp.square(c).sum()

    grad_params, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, to_jax(x))
    np.testing.assert_allclose(grad_x, x.grad.numpy(), rtol=1e-4, atol=1e-4)
    for name, param in rim.named_parameters():
        layer, key = name.removeprefix("cells.").split(".")
        got = grad_params["params"][f"cells_{layer}"][key]
        np.testing.assert_allclose(got, param.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_jit_vmap_and_grad() -> None:
    rim = torch_rim()
    module, variables = from_torch(rim)
    xs = torch.randn(3, 6, 2, F_IN)  # 3 independent (T, B, F) sequences
    side_by_side = xs.permute(1, 0, 2, 3).flatten(1, 2)  # the same, as one batch of 6 for torch
    expected, _ = rim(side_by_side)
    expected.sum().backward()
    batched = jax.jit(jax.vmap(module.apply, in_axes=(None, 0)))
    out, (h, _) = batched(variables, to_jax(xs))
    assert out.shape == (3, 6, 2, H) and h.shape == (3, 1, 2, H)
    np.testing.assert_allclose(out.transpose(1, 0, 2, 3).reshape(6, 6, H), expected.detach(), rtol=1e-5, atol=1e-5)
    grads = jax.jit(jax.grad(lambda v: batched(v, to_jax(xs))[0].sum()))(variables)["params"]["cells_0"]
    for name, param in rim.cells[0].named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_swaps_in_for_flax_cells(cell: str) -> None:
    baseline = nn.OptimizedLSTMCell(H) if cell == "lstm" else nn.GRUCell(H)
    rim_cell = RIMCell(H, num_units=U, k=K, cell=cell, **SMALL)
    x = jax.random.normal(jax.random.key(0), (3, 6, F_IN))  # (B, T, F), nn.RNN's default layout
    carries = [c.initialize_carry(jax.random.key(1), x[:, 0].shape) for c in (baseline, rim_cell)]
    assert jax.tree.map(jnp.shape, carries[0]) == jax.tree.map(jnp.shape, carries[1])
    assert rim_cell.num_feature_axes == baseline.num_feature_axes == 1
    # A torch RIM's layer is a cell's parameters: nn.RNN(RIMCell) then runs the torch RIM.
    rim = torch_rim(cell, batch_first=True)
    expected, _ = rim(torch.tensor(np.asarray(x)))
    rnn = nn.RNN(rim_cell, variable_axes={"intermediates": 1})
    out, extra = jax.jit(partial(rnn.apply, mutable="intermediates"))(
        {"params": {"cell": from_torch(rim)[1]["params"]["cells_0"]}}, x
    )
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    active = extra["intermediates"]["cell"]["active"][0]  # (B, T, U)
    np.testing.assert_array_equal(active, rim.last_active[:, :, 0].transpose(0, 1).numpy())


def test_no_gradient_reaches_an_inactive_unit_through_communication() -> None:
    module, variables = from_torch(torch_rim())
    hx = tuple(jax.random.normal(key, (1, 1, H)) for key in jax.random.split(jax.random.key(0), 2))
    x = jax.random.normal(jax.random.key(1), (1, 1, F_IN))
    grads = jax.jit(jax.grad(lambda v: module.apply(v, x, hx)[0].sum()))(variables)["params"]["cells_0"]
    active = np.asarray(apply(module, variables, x, hx)[2][0, 0, 0])
    for name, unit_part in {"weight_hh": lambda g, u: g[u], "weight_ih": lambda g, u: g[:, :, u]}.items():
        for u in range(U):
            assert bool((unit_part(grads[name], u) != 0).any()) == bool(active[u]), (name, u)


def test_to_torch_round_trip() -> None:
    module = RIM(H, U, K, cell="gru", num_layers=2, batch_first=True, input_heads=2, **SMALL)
    x = jax.random.normal(jax.random.key(0), (3, 5, F_IN))
    variables = jax.jit(module.init)(jax.random.key(1), x)
    rim = to_torch(module, variables).eval()
    assert rim.batch_first and rim.num_layers == 2 and rim.cells[0].input_heads == 2
    out, _ = rim(torch.tensor(np.asarray(x)))
    np.testing.assert_allclose(apply(module, variables, x)[0], out.detach().numpy(), rtol=1e-5, atol=1e-5)
    back, back_variables = from_torch(rim)
    assert back.clone(input_value_size=None, comm_value_size=None) == module  # torch resolves these defaults
    jax.tree.map(np.testing.assert_array_equal, back_variables, jax.tree.map(np.asarray, variables))


def test_dropout_needs_deterministic_and_acts_only_when_false() -> None:
    rim = torch_rim(num_layers=2, dropout=0.5)
    module, variables = from_torch(rim)
    x = jax.random.normal(jax.random.key(0), (5, 3, F_IN))
    with pytest.raises(ValueError, match="deterministic"):
        apply(module, variables, x)
    plain = apply(module, variables, x, deterministic=True)[0]
    np.testing.assert_allclose(plain, rim(torch.tensor(np.asarray(x)))[0].detach().numpy(), atol=1e-5)
    rngs = [{"dropout": jax.random.key(seed)} for seed in (1, 1, 2)]
    a, b, c = (apply(module, variables, x, deterministic=False, rngs=r)[0] for r in rngs)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, plain)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(hidden_size=13), r"features divisible by num_units.*features=13, num_units=4"),
        (dict(k=5), r"1 <= k <= num_units=4, got k=5"),
        (dict(k=2.5), r"expected an int k with 1 <= k <= num_units=4, got k=2.5"),
        (dict(num_units=2.0), r"expected an int num_units > 0, got num_units=2.0"),
        (dict(cell="rnn"), r"unknown cell 'rnn'; expected one of 'lstm', 'gru'"),
        (dict(num_layers=0), r"num_layers > 0, got num_layers=0"),
        (dict(dropout=1.0), r"dropout in \[0, 1\), got dropout=1.0"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RIM(**{"hidden_size": H, "num_units": U, "k": K, **kwargs})


def test_bad_state_and_starts_shapes_raise() -> None:
    module, variables = from_torch(torch_rim(num_layers=2))
    x = jnp.zeros((4, 3, F_IN))
    with pytest.raises(ValueError, match=r"expected hx tensors of shape \(2, 3, 12\).*got \(1, 3, 12\)"):
        apply(module, variables, x, (jnp.zeros((1, 3, H)), jnp.zeros((1, 3, H))))
    with pytest.raises(ValueError, match=r"expected episode_starts of shape \(4, 3\).*got \(3, 4\)"):
        apply(module, variables, x, starts=jnp.zeros((3, 4), bool))
    batch_first, variables = from_torch(torch_rim(batch_first=True))
    with pytest.raises(ValueError, match=r"expected episode_starts of shape \(3, 4\), \(B, T\) .*got \(4, 3\)"):
        apply(batch_first, variables, jnp.zeros((3, 4, F_IN)), starts=jnp.zeros((4, 3), bool))


def test_import_graph_is_clean() -> None:
    """``import rims_rl`` loads no jax; ``rims_rl.jax`` loads no torch (run with torch made unimportable), and its
    modules import no torch at module level, and of ``rims_rl`` only ``rims_rl.jax`` and the checks both RIMs share
    (``rims_rl.checks``, which imports nothing beyond the standard library)."""
    check = "import sys, rims_rl; assert not {'jax', 'flax'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", check], check=True)
    no_torch = "import sys; sys.modules['torch'] = None; import rims_rl.jax; rims_rl.jax.RIMCell(8, num_units=2, k=1)"
    subprocess.run([sys.executable, "-c", no_torch], check=True)
    import ast
    from pathlib import Path

    import rims_rl.jax

    package = Path(rims_rl.jax.__file__).parent
    for path in [*package.glob("*.py"), package.parent / "checks.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: the converters import torch inside their functions
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                if path.name == "checks.py":
                    assert top in sys.stdlib_module_names or top == "__future__", (path.name, name)
                shared = name.startswith("rims_rl.jax") or name == "rims_rl.checks"
                assert top != "torch" and (top != "rims_rl" or shared), (path.name, name)
