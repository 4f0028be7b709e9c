"""Tests of ``RIM`` / ``RIMCell`` options beyond the paper's version: the authors' communication, initialisation,
attention biases and dropout placement (:data:`rims_rl.rim.AUTHORS`), against a plain reference step written from
the authors' equations (``anirudh9119/RIMs``, ``event_based/blocks_core.py`` and ``attention.py``)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from reference import unit_recurrence

from rims_rl import RIM, RIMCell, map_state
from rims_rl.rim import AUTHORS, PAPER

F_IN, H, U, K = 5, 12, 4, 2
SMALL = dict(input_key_size=8, comm_key_size=4, comm_heads=2)


def reference_step(cell: RIMCell, x, h, c):
    """One step from the published equations, plainly: a loop over units, explicit softmaxes, the null row first.

    :param x: a set of input elements ``(B, N, F)`` (one element for a vector input); ``h``, ``c``: ``(B, H)``.
    :return: ``((h_1, c_1), active)``, ``c_1`` ``None`` for a GRU; ``active`` ``(B, U)``.
    """
    b, n = x.shape[:2]
    u_n, s, hi, dk, dv = cell.num_units, cell.unit_size, cell.input_heads, cell.input_key_size, cell.input_value_size
    bias = cell.attention_bias
    hu, cu = h.view(b, u_n, s), c.view(b, u_n, s)
    null_value = cell.bias_value.view(hi, dv) if bias else torch.zeros(hi, dv, dtype=x.dtype)
    keys = torch.cat([torch.zeros(b, 1, hi, dk, dtype=x.dtype), (x @ cell.weight_key).view(b, n, hi, dk)], 1)
    values = torch.cat(
        [null_value.expand(b, 1, hi, dv), torch.einsum("bnf,hfv->bnhv", x, cell.weight_value) + null_value], 1
    )  # (B, 1 + N, Hi, dv)
    cand_h, cand_c, null_attn = [], [], []
    for u in range(u_n):
        query = hu[:, u] @ cell.weight_hh[u, :, : hi * dk]
        gates_h = hu[:, u] @ cell.weight_hh[u, :, hi * dk :] + cell.bias_hh[u, 0, -cell.gate_size :]
        if bias:
            query = query + cell.bias_hh[u, 0, : hi * dk]
        scores = torch.einsum("bhk,bnhk->bhn", query.view(b, hi, dk), keys) / math.sqrt(dk)
        p = scores.exp() / scores.exp().sum(-1, keepdim=True)  # (B, Hi, 1 + N)
        null_attn.append(p[..., 0].mean(-1))
        read = torch.einsum("bhn,bnhv->bhv", p, values).flatten(1)
        gates_x = read @ cell.weight_ih[:, :, u].flatten(0, 1) + cell.bias_ih[u, 0]
        new_h, new_c = unit_recurrence(cell.cell, gates_x, gates_h, hu[:, u], cu[:, u])
        cand_h.append(new_h)
        if new_c is not None:
            cand_c.append(new_c)
    active = torch.zeros(b, u_n, dtype=torch.bool)
    active.scatter_(1, torch.stack(null_attn, 1).topk(cell.k, dim=1, largest=False).indices, True)
    cand = torch.stack(cand_h, 1)  # (B, U, s)
    hc, dkc, dvc = cell.comm_heads, cell.comm_key_size, cell.comm_value_size
    qkv = torch.stack([cand[:, u] @ cell.weight_comm[u] for u in range(u_n)], 1)
    if bias:
        qkv = qkv + cell.bias_comm[:, 0]
    q, k, v = (t.unflatten(-1, (hc, -1)) for t in qkv.split([hc * dkc, hc * dkc, hc * dvc], -1))  # (B, U, Hc, d)
    comm = []
    for u in range(u_n):
        scores = torch.einsum("bhd,bjhd->bhj", q[:, u], k) / math.sqrt(dkc)
        p = scores.exp() / scores.exp().sum(-1, keepdim=True)  # (B, Hc, U): unit u's attention over the units
        o = torch.einsum("bhj,bjhd->bhd", p, v).flatten(1)  # heads concatenated
        if cell.communication == "paper":  # o W_o + b_o, per unit
            comm.append(o @ cell.weight_out[u] + cell.bias_out[u, 0])
        else:  # sigmoid(o W_g + b_g) * tanh(o W + b), W and W_g shared
            w, w_g = cell.weight_out.split(s, -1)
            b_w, b_g = cell.bias_out.split(s, -1)
            comm.append(torch.sigmoid(o @ w_g + b_g) * torch.tanh(o @ w + b_w))
    new_h = torch.where(active.unsqueeze(-1), cand + torch.stack(comm, 1), hu).flatten(1)
    new_c = torch.where(active.unsqueeze(-1), torch.stack(cand_c, 1), cu).flatten(1) if cand_c else None
    return (new_h, new_c), active


OPTION_SETS = [
    dict(zip(("communication", "attention_bias"), values, strict=True))
    for values in itertools.product(["paper", "authors"], [True, False])
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=str)
@pytest.mark.parametrize(("cell", "input_heads"), [("lstm", 1), ("gru", 1), ("lstm", 2)])
def test_cell_matches_reference_of_the_authors_equations(options: dict, cell: str, input_heads: int) -> None:
    torch.manual_seed(0)
    rim_cell = RIMCell(F_IN, H, U, K, cell=cell, input_heads=input_heads, init="authors", **SMALL, **options)
    rim_cell = rim_cell.double()
    with torch.no_grad():  # attention weights large enough that the units' attention and ranking differ
        for param in (rim_cell.weight_key, rim_cell.weight_value, rim_cell.weight_hh, rim_cell.weight_comm):
            param.mul_(30.0)
    x, h, c = (torch.randn(6, n, dtype=torch.float64) for n in (F_IN, H, H))
    expected, expected_active = reference_step(rim_cell, x.unsqueeze(1), h, c)
    got = rim_cell(x, (h, c) if cell == "lstm" else h)
    torch.testing.assert_close(got[0] if cell == "lstm" else got, expected[0], rtol=0, atol=1e-6)
    if cell == "lstm":
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-6)
    assert torch.equal(rim_cell.last_active, expected_active)
    assert len({tuple(row.tolist()) for row in expected_active}) > 1  # the ranking depends on the sample


def test_authors_init_scales() -> None:
    """Input values about 0.01 sqrt(F) instead of 1/sqrt(3) at an N(0, 1) input; recurrent weights within
    1/sqrt(H) instead of 1/sqrt(s); a communication residual that is nearly a constant (its biases) at init."""
    torch.manual_seed(0)
    x, h = torch.randn(512, 64), torch.randn(4, 512, 16) * 0.3
    stats = {}
    for init in ("default", "authors"):
        cell = RIMCell(64, 64, 4, 3, **(AUTHORS if init == "authors" else PAPER))
        value = torch.einsum("bf,hfd->bhd", x, cell.weight_value)
        with torch.no_grad():
            comm = cell._communicate(h, 0.0)
        stats[init] = {
            "value_rms": value.square().mean().sqrt().item(),
            "recurrent_max": max(cell.weight_ih.abs().max().item(), cell.weight_hh[..., 64:].abs().max().item()),
            "query_std": cell.weight_hh[..., :64].std().item(),
            "comm_spread": (comm.std(1).mean() / comm.abs().mean()).item(),  # across samples, relative to its size
        }
    assert 0.06 < stats["authors"]["value_rms"] < 0.1 and 0.5 < stats["default"]["value_rms"] < 0.65
    assert stats["authors"]["recurrent_max"] <= 1 / 8 and stats["default"]["recurrent_max"] > 0.2
    assert 0.009 < stats["authors"]["query_std"] < 0.011 and stats["default"]["query_std"] > 0.1
    assert stats["authors"]["comm_spread"] < 0.15 and stats["default"]["comm_spread"] > 0.4


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_without_attention_bias_units_tie_at_an_episode_start(cell: str) -> None:
    """At h = 0 every query is zero: all units attend alike, whatever the input, so the active set is the same
    index choice for every sample; with biases it depends on the input."""
    torch.manual_seed(0)
    x = torch.randn(64, F_IN) * 3
    tied = RIMCell(F_IN, H, U, K, cell=cell, attention_bias=False, **SMALL)
    tied(x)
    assert (tied.last_active == tied.last_active[0]).all()
    biased = RIMCell(F_IN, H, U, K, cell=cell, **SMALL)
    biased(x)
    assert not (biased.last_active == biased.last_active[0]).all()


@pytest.mark.parametrize("input_heads", [1, 2])
@pytest.mark.parametrize("dropout_at", ["probabilities", "outputs"])
def test_authors_rim_trains_and_drops_out_only_in_train(dropout_at: str, input_heads: int) -> None:
    torch.manual_seed(0)
    options = {**SMALL, **AUTHORS, "dropout_at": dropout_at, "input_heads": input_heads}
    rim = RIM(F_IN, H, U, K, num_layers=2, dropout=0.3, **options)
    x = torch.randn(6, 4, F_IN, requires_grad=True)
    rim.eval()
    assert torch.equal(rim(x)[0], rim(x)[0])
    plain = RIM(F_IN, H, U, K, num_layers=2, **options)
    plain.load_state_dict(rim.state_dict())
    assert torch.equal(rim(x)[0], plain(x)[0])
    rim.train()
    out = rim(x)[0]
    assert not torch.equal(out, rim(x)[0])
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in rim.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("communication", ["paper", "authors"])
def test_dropout_acts_where_dropout_at_says(communication: str) -> None:
    """In the communication: ``"outputs"`` drops entries of the projected output (exact zeros in the authors'
    ``tanh``, the rest scaled by ``1 / (1 - p)``); ``"probabilities"`` drops attention weights (no exact zeros)."""
    torch.manual_seed(0)
    cell = RIMCell(F_IN, H, U, K, communication=communication, **SMALL)
    h = torch.randn(U, 200, H // U)
    with torch.no_grad():
        plain = cell._communicate(h, 0.0)
        cell.dropout_at = "outputs"
        outputs = cell._communicate(h, 0.5)
        cell.dropout_at = "probabilities"
        probabilities = cell._communicate(h, 0.5)
    dropped = outputs == 0
    if communication == "paper":
        torch.testing.assert_close(outputs[~dropped], 2 * plain[~dropped])
    else:  # sigmoid(o W_g + b_g) * tanh(2 (o W + b)) where kept
        assert not torch.equal(outputs[~dropped], plain[~dropped])
    assert 0.4 < dropped.float().mean() < 0.6
    assert not (probabilities == 0).any() and not torch.equal(probabilities, plain)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(communication="gated"), r"^expected communication one of 'paper', 'authors', got communication='gated'$"),
        (dict(init="xavier"), r"^expected init one of 'default', 'authors', got init='xavier'$"),
        (dict(attention_bias=1), r"^expected attention_bias one of True, False, got attention_bias=1$"),
        (dict(dropout_at="weights"), r"^expected dropout_at one of 'probabilities', 'outputs', got dropout_at="),
    ],
)
def test_bad_options_raise_one_line(kwargs: dict, match: str) -> None:
    for module in (RIM, RIMCell):
        with pytest.raises(ValueError, match=match):
            module(F_IN, H, U, K, **kwargs)


def test_options_in_repr_and_defaults_are_the_paper() -> None:
    rim = RIM(F_IN, H, U, K, **AUTHORS)
    text = "communication='authors', init='authors', attention_bias=False, dropout_at='outputs'"
    assert text in repr(rim).splitlines()[1] and text in repr(rim.cells[0])
    plain = RIM(F_IN, H, U, K)
    assert "authors" not in repr(plain) and all(getattr(plain, n) == v for n, v in PAPER.items())
    assert {n for n, _ in rim.cells[0].named_parameters()} == {n for n, _ in plain.cells[0].named_parameters()} - {
        "bias_value",
        "bias_comm",
    }


def test_gru_units_with_the_authors_communication_grow_by_at_most_one_per_step() -> None:
    # The README's advice for GRU units: the gated residual adds at most 1 per step (a tanh under a sigmoid gate) to
    # a candidate that stays within max(1, |h|), so |h_t| <= t + 1 from a zero state, whatever the weights; the
    # paper's linear residual, with the same inflated weights, grows geometrically (as a trained GRU-unit critic's).
    torch.manual_seed(0)
    steps = 60
    x = 3 * torch.randn(steps, 4, F_IN)

    def peak_per_step(communication: str) -> torch.Tensor:
        rim = RIM(F_IN, H, U, K, cell="gru", communication=communication, **SMALL)
        with torch.no_grad():
            for param in rim.parameters():
                param.mul_(8)
            out, _ = rim(x)
        return out.abs().amax(dim=(1, 2))

    authors, paper = peak_per_step("authors"), peak_per_step("paper")
    assert bool((authors <= torch.arange(2, steps + 2) + 1e-5).all()), authors
    assert bool(paper.nan_to_num(torch.inf)[-1] > steps), paper  # here: NaN by step 60


def test_jax_conversion_refuses_the_authors_options() -> None:
    convert = pytest.importorskip("rims_rl.jax.convert")
    with pytest.raises(ValueError, match=r"^expected a torch RIM with the paper's options .*got init='authors'$"):
        convert.from_torch(RIM(F_IN, H, U, K, init="authors"))


def test_authors_options_keep_states_and_chunks() -> None:
    rim = RIM(F_IN, H, U, K, num_layers=2, **SMALL, **AUTHORS).eval()
    x, hx = torch.randn(9, 3, F_IN), map_state(torch.randn_like, rim.initial_state(3))
    out, state = rim(x, hx)
    first, mid = rim(x[:4], hx)
    second, end = rim(x[4:], mid)
    torch.testing.assert_close(torch.cat([first, second]), out, rtol=0, atol=1e-6)
    torch.testing.assert_close(end, state, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "plain"), [("rim_authors", "rim"), *[(f"dido_rim_k{k}_authors", f"dido_rim_k{k}") for k in (3, 2)]]
)
def test_authors_model_configs(name: str, plain: str) -> None:
    """Each authors' config is its plain config's sizes with every option of AUTHORS, and a label of its own."""
    from omegaconf import OmegaConf

    from rims_rl.experiments.config import CONFIG_DIR, model_label

    cfg, plain_cfg = (OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / f"{n}.yaml")) for n in (name, plain))
    assert cfg == {**plain_cfg, **AUTHORS, "dropout": 0.1}
    core = cfg.pop("core")
    assert model_label(core, cfg) == model_label(core, {**cfg, **PAPER}) + "_authors"
    rim = RIM(F_IN, **cfg)
    assert all(getattr(rim, n) == v for n, v in AUTHORS.items())


# Set-structured input: a set of N elements per step, (T, B, N, F) / (B, N, F).


@pytest.mark.parametrize("options", [PAPER, AUTHORS], ids=["paper", "authors"])
@pytest.mark.parametrize(("cell", "input_heads"), [("lstm", 1), ("gru", 1), ("lstm", 2)])
def test_cell_reads_a_set_like_the_reference(options: dict, cell: str, input_heads: int) -> None:
    torch.manual_seed(0)
    rim_cell = RIMCell(F_IN, H, U, K, cell=cell, input_heads=input_heads, **SMALL, **options).double().eval()
    with torch.no_grad():  # sharp attention, so that the units' ranking and reads differ
        for param in (rim_cell.weight_key, rim_cell.weight_hh):
            param.mul_(3.0 if options is PAPER else 100.0)
    x, h, c = torch.randn(6, 7, F_IN, dtype=torch.float64), *(torch.randn(6, H, dtype=torch.float64) for _ in "hc")
    expected, expected_active = reference_step(rim_cell, x, h, c)
    got = rim_cell(x, (h, c) if cell == "lstm" else h)
    torch.testing.assert_close(got[0] if cell == "lstm" else got, expected[0], rtol=0, atol=1e-6)
    if cell == "lstm":
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-6)
    assert torch.equal(rim_cell.last_active, expected_active)
    assert len({tuple(row.tolist()) for row in expected_active}) > 1


@pytest.mark.parametrize("options", [PAPER, AUTHORS], ids=["paper", "authors"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_set_of_one_element_equals_the_vector_input(options: dict, cell: str) -> None:
    torch.manual_seed(0)
    rim = RIM(F_IN, H, U, K, cell=cell, num_layers=2, **SMALL, **options).eval()
    x, hx = torch.randn(6, 3, F_IN), map_state(torch.randn_like, rim.initial_state(3))
    out, state = rim(x, hx)
    active = rim.last_active
    set_out, set_state = rim(x.unsqueeze(2), hx)
    torch.testing.assert_close(set_out, out, rtol=0, atol=1e-6)
    torch.testing.assert_close(set_state, state, rtol=0, atol=1e-6)
    assert torch.equal(rim.last_active, active)


def test_different_units_read_different_elements() -> None:
    """Unit 0's query matches element 0's key, unit 1's element 1's (communication off): changing an element
    changes only the unit that reads it."""
    cell = RIMCell(2, 8, num_units=2, k=2, input_key_size=2, comm_heads=1, comm_key_size=2)
    with torch.no_grad():
        cell.weight_key.copy_(torch.eye(2))
        cell.bias_hh[:, 0, :2] = torch.tensor([[20.0, 0.0], [0.0, 20.0]])  # the queries at h = 0
        cell.weight_out.zero_()  # communication adds a constant
    elements = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    h = cell(elements)[0].view(2, 4)  # (U, s)
    for changed in (0, 1):
        other = elements.clone()
        other[0, changed, changed] = 2.0
        h_other = cell(other)[0].view(2, 4)
        torch.testing.assert_close(h_other[1 - changed], h[1 - changed], rtol=0, atol=1e-6)
        assert (h_other[changed] - h[changed]).abs().max() > 1e-2


@pytest.mark.parametrize("options", [PAPER, AUTHORS], ids=["paper", "authors"])
def test_set_input_episode_starts_chunks_and_batch_first(options: dict) -> None:
    torch.manual_seed(0)
    rim = RIM(F_IN, H, U, K, num_layers=2, **SMALL, **options).eval()
    x, hx = torch.randn(8, 3, 5, F_IN), map_state(torch.randn_like, rim.initial_state(3))
    out, state = rim(x, hx)
    first, mid = rim(x[:3], hx)
    second, end = rim(x[3:], mid)
    torch.testing.assert_close(torch.cat([first, second]), out, rtol=0, atol=1e-6)
    torch.testing.assert_close(end, state, rtol=0, atol=1e-6)
    starts = torch.zeros(8, 3, dtype=torch.bool)
    starts[4, 1] = True
    reset, _ = rim(x, hx, episode_starts=starts)
    torch.testing.assert_close(reset[4:, 1:2], rim(x[4:, 1:2])[0], rtol=0, atol=1e-6)
    assert torch.equal(reset[:, [0, 2]], out[:, [0, 2]])
    rim.batch_first = True
    batch_first, _ = rim(x.transpose(0, 1), hx, episode_starts=starts.t())
    torch.testing.assert_close(batch_first.transpose(0, 1), reset, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dropout_at", ["probabilities", "outputs"])
def test_gradients_reach_every_element(dropout_at: str) -> None:
    torch.manual_seed(0)
    rim = RIM(F_IN, H, U, K, num_layers=2, dropout=0.1, dropout_at=dropout_at, **SMALL).train()
    x = torch.randn(6, 4, 5, F_IN, requires_grad=True)
    out, _ = rim(x)
    assert not torch.equal(out, rim(x)[0])  # dropout acts
    out.square().sum().backward()
    assert (x.grad.abs().sum(-1) > 0).all()  # every element of every sample at every step
    for name, param in rim.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_input_shapes_raise_one_line() -> None:
    rim, cell = RIM(F_IN, H, U, K), RIMCell(F_IN, H, U, K)
    with pytest.raises(
        ValueError, match=r"^expected input \(T, B, 5\), \(T, 5\) or a set \(T, B, N, 5\) .*got \(2, 3, 4, 5, 5\)$"
    ):
        rim(torch.randn(2, 3, 4, 5, F_IN))
    with pytest.raises(ValueError, match=r"^expected input .*got \(2, 3, 4, 6\)$"):
        rim(torch.randn(2, 3, 4, F_IN + 1))
    with pytest.raises(ValueError, match=r"^expected input of shape \(B, 5\) or a set \(B, N, 5\), got \(5,\)$"):
        cell(torch.randn(F_IN))
    assert RIM.accepts_sets and not hasattr(torch.nn.LSTM, "accepts_sets")
