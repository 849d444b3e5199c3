import copy

import numpy as np
import pytest
import torch

from btcli.agent.dqn import DQNLearner, clip_grad_norm, td_targets
from btcli.agent.networks import QHead, build_q_network
from btcli.agent.replay import TensorBatch
from btcli.behaviour import epsilon_greedy, linear_schedule
from btcli.pretrained import zero_values


def test_td_targets_double_and_plain_by_hand():
    returns = torch.tensor([1.0, 0.5])
    discounts = torch.tensor([0.9, 0.0])
    next_target = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    next_online = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # double: online picks action 0 for row 0 -> target value 1.0 -> 1 + 0.9*1 = 1.9
    assert torch.allclose(td_targets(returns, discounts, next_target, next_online), torch.tensor([1.9, 0.5]))
    # plain: max of target -> 1 + 0.9*3 = 3.7; row 1 terminal -> 0.5
    assert torch.allclose(td_targets(returns, discounts, next_target, None), torch.tensor([3.7, 0.5]))


@pytest.mark.parametrize("max_norm, expected", [(100.0, [30.0, 40.0, 0.0]), (10.0, [6.0, 8.0, 0.0])])
def test_clip_grad_norm_by_hand(max_norm, expected):
    # gradients (30, 40) and (0,): global norm 50; a max norm of 100 leaves them as they are, 10 scales by 1/5
    def params():
        a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
        a.grad, b.grad = torch.tensor([30.0, 40.0]), torch.zeros(1)
        return [a, b]

    ours, theirs = params(), params()
    assert clip_grad_norm(ours, max_norm).item() == pytest.approx(50.0)
    assert torch.cat([p.grad for p in ours]).tolist() == pytest.approx(expected, rel=1e-5)
    torch.nn.utils.clip_grad_norm_(theirs, max_norm, foreach=True)  # bit for bit the same numbers as torch's
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours, theirs))


@pytest.mark.parametrize("dueling", [True, False])
def test_zero_values_keeps_only_differences_between_actions(dueling):
    torch.manual_seed(0)
    net = build_q_network((6,), 4, dueling=dueling)
    with torch.no_grad():
        for p in net.head.parameters():
            p.add_(3.0)  # an offset common to every action, as an intrinsic reward's values carry
        obs = torch.randn(16, 6)
        before = net(obs)
        zero_values(net, "all")
        after = net(obs)
    assert before.mean().item() > 1.0
    scale = before.abs().max().item()  # float32 rounding of values this size
    torch.testing.assert_close(after, before - before.mean(dim=1, keepdim=True), rtol=0, atol=1e-6 * scale)
    assert torch.equal(after.argmax(dim=1), before.argmax(dim=1))


def test_zero_values_with_a_fresh_head_gives_zero_q():
    net = build_q_network((6,), 4, dueling=True)
    zero_values(net, "torso")
    assert torch.equal(net(torch.randn(5, 6)), torch.zeros(5, 4))


def test_dueling_head_mean_zero_advantage():
    torch.manual_seed(0)
    head = QHead(4, 3, dueling=True)
    x = torch.randn(5, 4)
    q = head(x)
    value = head.value(x)
    assert torch.allclose(q.mean(dim=1, keepdim=True), value, atol=1e-6)


def test_networks_shapes():
    cnn = build_q_network((4, 84, 84), 6)
    assert cnn(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 6)
    grid = build_q_network((7, 7, 2), 7)
    obs = torch.zeros(3, 7, 7, 2, dtype=torch.uint8)
    obs[..., 0] = 10
    obs[..., 1] = 3
    assert grid(obs).shape == (3, 7)


def test_gridconv_features_move_with_the_grid():
    import pytest

    torch.manual_seed(0)
    net = build_q_network((11, 11, 2), 7, torso="gridconv", hidden=16)
    obs = torch.ones(2, 11, 11, 2, dtype=torch.uint8)  # empty cells (type 1, state 0)
    obs[0, 4, 4] = torch.tensor([10, 5])  # agent facing down on a visited cell, at x=4
    obs[1, 4, 5] = torch.tensor([10, 5])  # the same, one cell to the right
    assert net(obs).shape == (2, 7)
    inner = obs[:, 1:-1, 1:-1]
    codes = inner[..., 0].long() * 8 + inner[..., 1].long()
    cells = net.torso.cell_codes[codes].permute(0, 3, 1, 2)
    maps = net.torso.convs[:-1](cells)  # [2, C, 9, 9] before flattening
    # two 3x3 layers: columns 0-1 and 7-8 see the zero padding; elsewhere the second grid's
    # feature maps are the first's shifted right by one column
    assert torch.allclose(maps[1, :, :, 3:7], maps[0, :, :, 2:6], atol=1e-6)
    assert not torch.allclose(maps[1, :, :, 2:6], maps[0, :, :, 2:6], atol=1e-3)
    with pytest.raises(ValueError, match="gridconv"):
        build_q_network((4, 84, 84), 6, torso="gridconv")


def test_egocentric_view_by_hand():
    from btcli.agent.networks import egocentric_codes

    # a 3x3 grid of codes: the agent (100 + direction) at row 1, column 0; 7 marks one cell
    def view(direction, marker):
        codes = torch.zeros(1, 3, 3, dtype=torch.long)
        codes[0, 1, 0] = 100 + direction
        codes[0, marker[0], marker[1]] = 7
        return egocentric_codes(codes, codes >= 100, pad_code=-1)[0]

    for direction, ahead in [(0, (1, 1)), (1, (2, 0)), (3, (0, 0))]:  # right, down, up
        v = view(direction, ahead)
        assert v.shape == (5, 5) and v[2, 2] == 100 + direction
        assert v[1, 2] == 7, direction  # the cell in front is above the centre
    # facing right (east) from (1, 0): north is on the agent's left, the west edge behind it
    facing_right = view(0, (0, 0))
    assert facing_right[2, 1] == 7
    assert (facing_right[3:] == -1).all()  # the two rows behind the agent lie outside the grid
    # facing left (west): the grid's edge is ahead; (2, 2) is one south (left) and two east (behind)
    facing_left = view(2, (2, 2))
    assert (facing_left[:2] == -1).all()
    assert facing_left[4, 1] == 7


def test_update_moves_q_towards_target_and_sync_copies():
    torch.manual_seed(0)
    net = build_q_network((3, 3, 2), 2, hidden=16)
    learner = DQNLearner(net, lr=1e-2, adam_eps=1e-8)
    obs = torch.zeros(8, 3, 3, 2, dtype=torch.uint8)
    actions = torch.zeros(8, dtype=torch.int64)
    returns = torch.full((8,), 5.0)
    discounts = torch.zeros(8)
    before = learner.q_values(obs)[0, 0].item()
    for _ in range(50):
        learner.update(TensorBatch(obs, actions, returns, discounts, obs))
    after = learner.q_values(obs)[0, 0].item()
    assert abs(after - 5.0) < abs(before - 5.0) / 2
    assert not torch.allclose(learner.target(obs), learner.online(obs))
    learner.sync_target()
    assert torch.allclose(learner.target(obs), learner.online(obs))
    assert learner.updates == 50


def _grid_batch(shape: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    """Random floor/wall grids with one agent each, facing a random way."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(batch, *shape, dtype=torch.uint8)
    obs[..., 0] = torch.where(torch.rand(batch, *shape[:2], generator=g) < 0.2, 2, 1).to(torch.uint8)
    for i in range(batch):
        y, x = torch.randint(1, shape[0] - 1, (2,), generator=g).tolist()
        obs[i, y, x] = torch.tensor([10, int(torch.randint(0, 4, (1,), generator=g))])
    return obs


@pytest.mark.parametrize("torso, shape", [("mlp", (7, 7, 2)), ("gridego", (7, 7, 2)), ("cnn", (4, 84, 84))])
def test_update_matches_plain_forwards_and_encodes_each_batch_once(torso, shape):
    # the learner encodes next_obs once for both networks (grids: obs and next_obs in one call);
    # its loss and gradients must equal the textbook ones from plain forwards of each network
    torch.manual_seed(0)
    net = build_q_network(shape, 5, torso=torso, hidden=32)
    batch = 6
    if torso == "cnn":
        obs, next_obs = (torch.randint(0, 256, (batch, *shape), dtype=torch.uint8) for _ in range(2))
    else:
        obs, next_obs = _grid_batch(shape, batch, 1), _grid_batch(shape, batch, 2)
    actions = torch.tensor([0, 1, 2, 3, 4, 0])
    returns, discounts = torch.linspace(-1.0, 1.0, batch), torch.full((batch,), 0.9)

    online, target = copy.deepcopy(net), copy.deepcopy(net)
    with torch.no_grad():
        next_online, next_target = online(next_obs), target(next_obs)
        y = td_targets(returns, discounts, next_target, next_online)
    expected_loss = torch.nn.functional.smooth_l1_loss(online(obs).gather(1, actions[:, None]).squeeze(1), y)
    expected_loss.backward()

    learner = DQNLearner(copy.deepcopy(net), lr=0.0, adam_eps=1e-8, max_grad_norm=0.0)
    calls = []
    encode = learner.online.torso.encode
    learner.online.torso.encode = lambda o: calls.append(len(o)) or encode(o)
    loss, _ = learner.update(TensorBatch(obs, actions, returns, discounts, next_obs))
    assert calls == ([2 * batch] if torso != "cnn" else [batch, batch])
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-5, atol=1e-6)
    for (name, p), ref in zip(learner.online.named_parameters(), online.parameters()):
        torch.testing.assert_close(p.grad, ref.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_linear_schedule_by_hand():
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert abs(linear_schedule(1.0, 0.1, 100, 50) - 0.55) < 1e-12
    assert linear_schedule(1.0, 0.1, 100, 100) == 0.1
    assert linear_schedule(1.0, 0.1, 100, 10_000) == 0.1


def test_epsilon_greedy_rate():
    rng = np.random.default_rng(0)
    greedy = np.zeros(20_000, dtype=np.int64)
    actions = epsilon_greedy(greedy, 0.3, 4, rng)
    # random actions are non-zero 3/4 of the time: expected share 0.3 * 0.75 = 0.225
    assert abs((actions != 0).mean() - 0.225) < 0.01
    assert (epsilon_greedy(greedy, 0.0, 4, rng) == 0).all()


def test_grid_lookup_matches_embedding_forward_and_gradient():
    from btcli.agent.networks import _SmallVocabLookup

    torch.manual_seed(0)
    table = torch.randn(44, 3, requires_grad=True)
    reference = torch.nn.Embedding(44, 3)
    reference.weight.data.copy_(table.data)
    codes = torch.randint(0, 44, (5, 7, 7))
    codes[0, 0, 0] = codes[0, 0, 1] = 9  # a repeated code accumulates gradient
    ours, theirs = _SmallVocabLookup.apply(codes, table), reference(codes)
    assert torch.equal(ours, theirs)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.allclose(table.grad, reference.weight.grad, atol=1e-6)
    assert table.grad[codes.unique()].abs().sum() > 0
    unused = torch.ones(44, dtype=torch.bool)
    unused[codes.unique()] = False
    assert table.grad[unused].abs().sum() == 0


@pytest.mark.parametrize("one_hot", [False, True])
def test_lookup_table_grad_by_hand(one_hot):
    from btcli.agent.networks import lookup_table_grad

    codes = torch.tensor([2, 0, 2, 3])
    grad = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    # row 0 gets grad row 1; row 1 nothing; row 2 rows 0 and 2 summed; row 3 row 3
    expected = torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [7.0, 8.0]])
    assert torch.equal(lookup_table_grad(codes, grad, 4, one_hot=one_hot), expected)


def test_bf16_update_follows_fp32_gradient():
    """The opt-in bf16 autocast changes the update's numbers only slightly."""
    torch.manual_seed(0)
    obs = torch.randint(0, 255, (32, 4, 84, 84), dtype=torch.uint8)
    next_obs = torch.randint(0, 255, (32, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 4, (32,))
    returns, discounts = torch.randn(32), torch.full((32,), 0.97)
    grads = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)
        learner = DQNLearner(build_q_network((4, 84, 84), 4), lr=0.0, adam_eps=1e-8, precision=precision)
        learner.update(TensorBatch(obs, actions, returns, discounts, next_obs))
        grads[precision] = torch.cat([p.grad.flatten() for p in learner.online.parameters()])
    cosine = torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0)
    assert cosine > 0.98, cosine
    assert not torch.equal(grads["fp32"], grads["bf16"])  # bf16 really ran


def test_bf16_on_a_cpu_without_native_bf16_is_warned(monkeypatch):
    from btcli import runtime

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    warning = runtime.precision_warning("bf16", cpu)
    assert warning is not None and "agent.precision=fp32" in warning
    assert runtime.precision_warning("fp32", cpu) is None
    assert runtime.precision_warning("bf16", cuda) is None
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.precision_warning("bf16", cpu) is None


def test_configure_torch_runs_numpy_blas_on_one_thread():
    """btcli's numpy matmuls are tiny; a multi-threaded BLAS only waits on busy cores."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from btcli.runtime import configure_torch

    blas = lambda: [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    with threadpool_limits(2, user_api="blas"):  # what OpenBLAS starts with on 2 cores
        assert blas()
        before = torch.get_num_threads()
        configure_torch(before)
        assert set(blas()) == {1} and torch.get_num_threads() == before


def test_cuda_graph_is_ignored_on_a_cpu():
    learner = DQNLearner(build_q_network((5, 5, 2), 3), lr=1e-3, adam_eps=1e-8, device="cpu", cuda_graph=True)
    assert learner.cuda_graph is False
    assert learner.optimizer.param_groups[0]["capturable"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_update_matches_eager(precision):
    from btcli.runtime import resolve_device

    resolve_device("cuda")  # deterministic cuDNN, as every run uses: else eager runs differ among themselves
    torch.manual_seed(0)
    net = build_q_network((4, 84, 84), 6)
    eager, graphed = (DQNLearner(copy.deepcopy(net), lr=1e-3, adam_eps=1e-8, precision=precision, device="cuda",
                                 cuda_graph=g) for g in (False, True))
    gen = torch.Generator().manual_seed(1)

    def batch():
        frames = lambda: torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, generator=gen)
        parts = (frames(), torch.randint(0, 6, (32,), generator=gen), torch.randn(32, generator=gen),
                 torch.full((32,), 0.97), frames())
        return [x.cuda() for x in parts]

    def close(a, b):
        return torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5)

    for k in range(10):
        b = batch()
        (loss_e, q_e), (loss_g, q_g) = eager.update(TensorBatch(*b)), graphed.update(TensorBatch(*b))
        assert close(loss_e, loss_g) and close(q_e, q_g), k
        if k == 6:
            eager.sync_target()
            graphed.sync_target()
    assert graphed._graph is not None and eager.updates == graphed.updates == 10
    for p, r in zip(eager.online.parameters(), graphed.online.parameters()):
        assert close(p, r)
    graphed.load_state_dict(eager.state_dict())  # a resume: new optimizer state, so the graph is recaptured
    assert graphed._graph is None
    b = batch()
    assert close(eager.update(TensorBatch(*b))[0], graphed.update(TensorBatch(*b))[0])
    assert graphed._graph is not None


def test_large_margin_loss_by_hand():
    from btcli.agent.dqn import large_margin_loss

    q = torch.tensor([[1.0, 0.5, 0.2], [0.0, 0.3, 0.1], [2.0, 2.0, 2.0]])
    demo = torch.tensor([0, 0, 2])
    # row 0: max(1, 0.5+0.1, 0.2+0.1) - 1 = 0 (a_d leads by more than the margin)
    # row 1: max(0, 0.4, 0.2) - 0 = 0.4; row 2: max(2.1, 2.1, 2) - 2 = 0.1
    loss = large_margin_loss(q, demo, 0.1)
    torch.testing.assert_close(loss, torch.tensor([0.0, 0.4, 0.1]))
