"""The token-pruned model: decisions (kept sets, protection, padding, highway) and exactness (budget 1.0 ≡ dense)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from simba_convert.errors import ConfigError
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM, MambaMixer
from simba_convert.ops.score import impact_score_ref
from simba_convert.pruning import flops, schedules
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.select import gather_rows, gather_slots, select_kept, select_kept_dense_rows
from simba_convert.pruning.spec import PruningSpec
from tolerance import assert_matches

CFG = MambaConfig(d_model=24, n_layer=4, vocab_size=61, d_state=5, d_conv=3)


@pytest.fixture
def model():
    m = MambaLM(CFG).eval()
    with torch.no_grad():  # non-trivial dt and A so scores differ between tokens
        for layer in m.backbone.layers:
            layer.mixer.dt_proj.bias.uniform_(-4, 0)
            layer.mixer.A_log.uniform_(-1, 1)
    return m


def spec(r, **kw):
    return PruningSpec(tuple(r), **kw)


@torch.no_grad()
def test_budget_one_is_dense_exactly(model):
    ids = torch.randint(0, 61, (2, 33))
    assert torch.equal(PrunedMambaLM(model, spec([1.0] * 4, protect=3))(ids), model(ids))


@torch.no_grad()
def test_kept_counts_order_nesting_and_protection(model):
    L, P = 50, 6
    s = spec([1.0, 0.7, 0.4, 0.2], protect=P)
    _, info = PrunedMambaLM(model, s)(torch.randint(0, 61, (3, L)), return_info=True)
    assert info.counts()[:, 0].tolist() == s.keep_counts(L)
    prev = None
    for kept in info.kept:
        for row in kept:
            row = row[row >= 0].tolist()
            assert row == sorted(row), "kept tokens are in original order"
            assert set(range(L - P, L)) <= set(row), "protected suffix always kept"
        if prev is not None:
            for a, b in zip(prev, kept):
                assert set(b[b >= 0].tolist()) <= set(a[a >= 0].tolist()), "a pruned token never returns"
        prev = kept


@torch.no_grad()
def test_first_decision_is_topk_of_reference_score(model):
    L, P = 40, 4
    ids = torch.randint(0, 61, (2, L))
    s = spec([1.0, 0.5, 0.5, 0.5], protect=P)
    _, info = PrunedMambaLM(model, s, score_backend="reference")(ids, return_info=True)
    layer = model.backbone.layers[0]
    h, _ = layer.add_norm(model.backbone.embedding(ids), None)
    _, it = layer.mixer(h, return_internals=True)
    sc = impact_score_ref(it.u, it.delta, it.A, it.Bm, it.Cm, criterion="last")
    k = s.keep_counts(L)[1]
    for b in range(2):
        rest = sc[b, : L - P]
        expect = set(torch.topk(rest, k - P).indices.tolist()) | set(range(L - P, L))
        assert set(info.kept[1][b].tolist()) == expect


@torch.no_grad()
def test_padding_never_kept_and_batched_equals_unbatched(model):
    L = 37
    ids = torch.randint(0, 61, (3, L))
    mask = torch.ones(3, L, dtype=torch.bool)
    mask[1, 25:] = False  # right padding
    mask[2, :9] = False  # left padding
    pm = PrunedMambaLM(model, spec([1.0, 0.6, 0.4, 0.3], protect=3))
    out, info = pm(ids, mask, return_info=True)
    for kept in info.kept:
        for b in range(3):
            row = kept[b][kept[b] >= 0]
            assert mask[b, row].all(), "a padded position was kept"
    for b in range(3):
        single, sinfo = pm(ids[b : b + 1, mask[b]], return_info=True)
        assert_matches(out[b, mask[b]], single[0])
        real = torch.nonzero(mask[b]).squeeze(1)
        for kb, ks in zip(info.kept, sinfo.kept):
            assert kb[b][kb[b] >= 0].tolist() == real[ks[0][ks[0] >= 0]].tolist()
    assert (out[~mask] == 0).all()


@torch.no_grad()
def test_highway_logits_of_tokens_pruned_after_layer_one(model):
    ids = torch.randint(0, 61, (1, 30))
    out, info = PrunedMambaLM(model, spec([1.0, 0.3, 0.3, 0.3], protect=2))(ids, return_info=True)
    layer = model.backbone.layers[0]
    h, res = layer.add_norm(model.backbone.embedding(ids), None)
    stream = layer.mixer(h) + res
    expect = model.head(stream)
    pruned = info.pruned_mask(30)[0]
    assert pruned.sum() > 0
    assert_matches(out[0, pruned], expect[0, pruned])


@torch.no_grad()
def test_generation_pruned_prefill_then_dense_steps(model):
    ids = torch.randint(0, 61, (2, 25))
    pm = PrunedMambaLM(model, spec([1.0, 0.5, 0.4, 0.3], protect=2))
    last, states = pm.prefill(ids)
    assert_matches(last, pm(ids)[:, -1])
    g1, g2 = pm.generate(ids, 6), pm.generate(ids, 6)
    assert torch.equal(g1, g2) and g1.shape == (2, 31)
    dense_spec = PrunedMambaLM(model, spec([1.0] * 4))
    assert torch.equal(dense_spec.generate(ids, 6), model.generate(ids, 6))


def replay_kept_tokens(model, ids, kept):
    """Per-layer (conv, ssm) states and last-position logits by stepping each dense layer recurrently, token by
    token from zero states, over exactly the tokens PruneInfo says it kept (unpadded rows). A layer's input at a
    token is that token's residual stream as the layer below left it."""
    bsz = ids.shape[0]
    rows = torch.arange(bsz)
    D, N, K = model.config.d_inner, model.config.d_state, model.config.d_conv
    stream = model.backbone.embedding(ids)  # [B, L, d]: each token's latest residual stream
    states = []
    for layer, kept_l in zip(model.backbone.layers, kept):
        assert (kept_l >= 0).all()
        conv, ssm = torch.zeros(bsz, D, K - 1), torch.zeros(bsz, D, N)
        for t in kept_l.t():  # [B]: the i-th kept token of each sample
            h, res = layer.add_norm(stream[rows, t], None)
            out, conv, ssm = layer.mixer.step(h, conv, ssm)
            stream[rows, t] = out.to(res.dtype) + res
        states.append((conv, ssm))
    return model.head(stream[:, -1]), states


@torch.no_grad()
def test_pruned_prefill_states_replay_each_layers_kept_tokens(model):
    """The states the pruned prefill hands to decoding are, layer by layer, those of the dense layer run
    recurrently over exactly that layer's kept tokens (not over the whole prompt)."""
    ids = torch.randint(0, 61, (2, 25))
    pm = PrunedMambaLM(model, spec([1.0, 0.5, 0.4, 0.3], protect=2))
    last, states = pm.prefill(ids)
    _, info = pm(ids, return_info=True)
    replay_last, replay_states = replay_kept_tokens(model, ids, info.kept)
    assert_matches(last, replay_last)
    for (conv, ssm), (conv_r, ssm_r) in zip(states, replay_states):
        assert_matches(conv, conv_r)
        assert_matches(ssm, ssm_r)
    # Not vacuous: above layer 0 the kept tokens differ from the prompt, and so do the states.
    assert all((k >= 0).sum(1).lt(25).all() for k in info.kept[1:])
    _, dense_states = model.prefill(ids)
    for (_, ssm), (_, ssm_dense) in zip(states[1:], dense_states[1:]):
        assert not torch.allclose(ssm, ssm_dense, rtol=1e-3, atol=1e-3)


def test_random_criterion_reproducible_from_seed(model):
    ids = torch.randint(0, 61, (2, 40))
    a = PrunedMambaLM(model, spec([1.0, 0.5, 0.3, 0.3], criterion="random", seed=3, protect=2))(ids, return_info=True)[1]
    b = PrunedMambaLM(model, spec([1.0, 0.5, 0.3, 0.3], criterion="random", seed=3, protect=2))(ids, return_info=True)[1]
    c = PrunedMambaLM(model, spec([1.0, 0.5, 0.3, 0.3], criterion="random", seed=4, protect=2))(ids, return_info=True)[1]
    assert all(torch.equal(x, y) for x, y in zip(a.kept, b.kept))
    assert not all(torch.equal(x, y) for x, y in zip(a.kept, c.kept))


@pytest.mark.parametrize("criterion", ["last", "global", "delta", "output", "random"])
def test_every_criterion_runs(model, criterion):
    out = PrunedMambaLM(model, spec([1.0, 0.5, 0.3, 0.2], criterion=criterion, protect=2))(torch.randint(0, 61, (2, 20)))
    assert torch.isfinite(out).all()


def test_spec_validation():
    with pytest.raises(ConfigError, match="non-increasing"):
        spec([1.0, 0.5, 0.6])
    with pytest.raises(ConfigError, match="must be 1.0"):
        spec([0.9, 0.5])
    with pytest.raises(ConfigError, match="floor"):
        spec([1.0, 0.01])
    with pytest.raises(ConfigError, match="criterion"):
        spec([1.0], criterion="magic")


def test_flops_match_torch_flop_counter_on_dense_path():
    """FlopCounterMode counts the matmuls and the conv; the scan and elementwise work are ours alone."""
    m = MambaLM(CFG).eval()
    L = 19
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.randint(0, 61, (1, L)))
    parts = flops.layer_parts(CFG)
    D, R = CFG.d_inner, CFG.dt_rank
    counted = parts["in_proj"] + parts["x_proj"] + 2 * R * D + 2 * D * CFG.d_conv + parts["out_proj"]
    head = 2 * CFG.d_model * CFG.padded_vocab_size
    assert fc.get_total_flops() == L * (CFG.n_layer * counted + head)


def test_flops_of_a_mamba_1_4b_layer_against_torch_and_the_notes():
    """A Mamba-1.4B layer counted independently: FlopCounterMode over the real mixer at that shape (meta tensors:
    no memory, no arithmetic) for the matmuls and the conv, plus the scan's 9·D·N of mamba#110, which torch
    cannot see. Together they are the hand count of notes/CHECKPOINTS.md §5; ours adds the elementwise terms."""
    cfg = MambaConfig(d_model=2048, n_layer=48, vocab_size=50277)
    L = 3
    with torch.device("meta"):
        mixer = MambaMixer(cfg)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        mixer(torch.zeros(1, L, cfg.d_model, device="meta"))
    counted = fc.get_total_flops() / L
    parts = flops.layer_parts(cfg)
    D, R = cfg.d_inner, cfg.dt_rank
    assert counted == parts["in_proj"] + parts["x_proj"] + 2 * R * D + 2 * D * cfg.d_conv + parts["out_proj"]
    notes = counted + 9 * D * cfg.d_state
    assert abs(notes / 1e6 - 53.35) < 0.05  # the notes add the D-skip, gate and bias terms to their 53.35
    ours = flops.layer_flops(cfg)
    assert 0 < ours - notes < 0.002 * notes  # the elementwise terms the notes leave out
    rep = flops.flops_report(cfg, [1.0] * 48, 2048, 64)
    assert rep.ratio == 1.0 and rep.scoring == 0


@pytest.mark.parametrize("name", ["linear", "uniform"])
@pytest.mark.parametrize("budget", [0.35, 0.5, 0.6, 0.8, 1.0])
def test_schedules_meet_budget(name, budget):
    cfg = MambaConfig(d_model=64, n_layer=8, vocab_size=100)
    r = schedules.schedule_for_budget(name, cfg, budget, 512, 16)
    achieved = flops.flops_report(cfg, r, 512, 16).ratio
    assert budget - 0.005 <= achieved <= budget
    assert r[0] == 1.0 and all(a >= b for a, b in zip(r, r[1:]))
    if name == "uniform":
        assert len(set(r[1:])) == 1


def test_paper_linear_and_infeasible_budget():
    r = schedules.paper_linear(12)
    assert r[0] == 1.0 and abs(r[-1] - 0.1) < 1e-12
    cfg = MambaConfig(d_model=64, n_layer=4, vocab_size=100)
    with pytest.raises(ConfigError, match="below what this schedule can reach"):
        schedules.schedule_for_budget("linear", cfg, 0.2, 512, 16)
    with pytest.raises(ConfigError, match="0 < budget"):
        schedules.schedule_for_budget("linear", cfg, 1.5, 512, 16)


@torch.no_grad()
def test_num_last_matches_full_logits(model):
    ids = torch.randint(0, 61, (3, 31))
    mask = torch.ones(3, 31, dtype=torch.bool)
    mask[1, 20:] = False
    mask[2, :4] = False
    pm = PrunedMambaLM(model, spec([1.0, 0.6, 0.4, 0.3], protect=5))
    full = pm(ids, mask)
    last = pm(ids, mask, num_last=5)
    for b in range(3):
        assert torch.equal(last[b], full[b, mask[b]][-5:])
    beyond = pm(ids, mask, num_last=9)  # more than the protected suffix: some come off the highway
    for b in range(3):
        assert torch.equal(beyond[b], full[b, mask[b]][-9:])
    assert torch.equal(model(ids, num_last=4), model(ids)[:, -4:])


@torch.no_grad()
@pytest.mark.parametrize("n", [1, 5, 9])
def test_num_last_matches_full_logits_without_mask(model, n):
    """n ≤ protect reads the top layer's last slots (no highway buffer); n > protect needs the frozen streams."""
    ids = torch.randint(0, 61, (3, 31))
    pm = PrunedMambaLM(model, spec([1.0, 0.6, 0.4, 0.3], protect=5))
    full, info = pm(ids, return_info=True)
    last, info_last = pm(ids, num_last=n, return_info=True)
    assert_matches(last, full[:, -n:])  # the head's GEMM over fewer rows may round differently (CPU: gemv at n=1)
    assert all(torch.equal(a, b) for a, b in zip(info.kept, info_last.kept))


@pytest.mark.parametrize("bsz,k,P,k_next", [(1, 2, 1, 1), (3, 63, 5, 40), (2, 100, 1, 2), (4, 17, 4, 4), (2, 9, 9, 9)])
def test_selection_without_padding_equals_general_selection(bsz, k, P, k_next):
    scores = torch.randn(bsz, k, generator=torch.Generator().manual_seed(k))
    valid = torch.ones(bsz, k, dtype=torch.bool)
    protected = (torch.arange(k) >= k - P).expand(bsz, k)
    general, general_valid = select_kept(scores, valid, protected, [k_next] * bsz)
    fast = select_kept_dense_rows(scores, P, k_next)
    assert general_valid.all() and torch.equal(fast, general)
    assert fast.shape == (bsz, k_next) and (fast[:, 1:] > fast[:, :-1]).all()


@pytest.mark.parametrize("bsz", [1, 3])
def test_gather_rows_equals_elementwise_gather(bsz):
    x, y = torch.randn(bsz, 10, 4), torch.randn(bsz, 10, 4).double()
    slots = torch.stack([torch.randperm(10)[:6].sort().values for _ in range(bsz)])
    gx, gy = gather_rows(slots, x, y)
    assert torch.equal(gx, gather_slots(x, slots)) and torch.equal(gy, gather_slots(y, slots))
    assert gx.shape == (bsz, 6, 4) and gy.dtype == torch.float64


def test_cuda_graph_refuses_a_cpu_model(model):
    from simba_convert.model.cuda_graph import GraphedForward

    with pytest.raises(ConfigError, match="CUDA"):
        GraphedForward(PrunedMambaLM(model, spec([1.0, 0.5, 0.4, 0.3], protect=2)), 2, 20, num_last=2)


@pytest.mark.gpu
@pytest.mark.parametrize("ratios", [[1.0] * 4, [1.0, 0.6, 0.4, 0.3]])
def test_cuda_graph_replay_equals_eager(model, ratios):
    from simba_convert.model.cuda_graph import GraphedForward

    dense = model.cuda().to(torch.bfloat16)
    pm = PrunedMambaLM(dense, spec(ratios, protect=5))
    graphed = GraphedForward(pm, 3, 100, num_last=5)
    for seed in range(2):  # fresh inputs each replay: the graph reads its static input buffer
        ids = torch.randint(0, 61, (3, 100), device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        with torch.no_grad():
            eager = pm(ids, num_last=5)
        assert torch.equal(graphed(ids), eager)
    with pytest.raises(ValueError, match="shape"):
        graphed(ids[:, :50])
    with pytest.raises(ConfigError, match="random"):
        GraphedForward(PrunedMambaLM(dense, spec(ratios, protect=5, criterion="random")), 3, 100, num_last=5)
