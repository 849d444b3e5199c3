"""Q-networks: a torso that turns observations into features, and a (dueling) head.

The split matters for transfer: fine-tuning may copy the torso only and train a fresh head.
Every torso splits its forward in two: ``encode`` (no parameters: uint8 frames to floats, grids
to cell codes) and ``features`` (the learned layers). A learner encodes a batch once and feeds
it to both the online and the target network, which share ``encode``.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# MiniGrid's compact encoding: channel 0 holds object types (minigrid's OBJECT_TO_IDX has 11),
# channel 1 holds door states (0..2) or the agent's direction (0..3), plus 4 on visited cells
# when the env marks them (env.visited).
GRID_OBJECT_TYPES = 11
GRID_STATES = 8
AGENT_TYPE, WALL_TYPE = 10, 2


class Torso(nn.Module):
    """Observations to features, in two steps: ``encode`` (no parameters) then ``features``."""

    out_features: int
    # A learner encodes obs and next_obs in one call when encoding is many small ops on small
    # tensors (grids: ~20 ops of ~190 per forward). A frame stack's encoding is one large
    # memory-bound pass, faster run right before each use (measured: together, 6-15% slower).
    encode_together = False

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.features(self.encode(obs))


class NatureCNN(Torso):
    """The DQN torso of Mnih et al. 2015 for uint8 frame stacks [B, C, 84, 84]."""

    def __init__(self, in_channels: int, out_features: int = 512):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * 7 * 7, out_features), nn.ReLU())
        self.out_features = out_features
        self.channels_last = False

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)  # reorder bytes, not floats
        return obs.mul(1.0 / 255.0)  # uint8 -> float32 and scaled in one pass (same values as .float() / 255)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x))


def inner_cell_codes(obs: torch.Tensor) -> torch.Tensor:
    """[B, H-2, W-2] codes ``type * GRID_STATES + state`` of a batch of grids, the outer ring skipped.

    MiniGrid surrounds every grid with walls (or, in MultiRoom, cells no agent can reach), so the
    ring carries no information and would cost a fifth of a 19x19 grid.
    """
    inner = obs[:, 1:-1, 1:-1]
    return inner[..., 0].long() * GRID_STATES + inner[..., 1].long().clamp_(max=GRID_STATES - 1)


def lookup_table_grad(codes: torch.Tensor, grad: torch.Tensor, rows: int, one_hot: bool | None = None) -> torch.Tensor:
    """[rows, D] gradient of a row lookup: the sum of ``grad``'s rows [N, D] per code [N].

    On a CPU one index_add. On CUDA index_add sums with atomics in no fixed order, so the same
    seed would give different weights from run to run; a one-hot matmul (``one_hot``, the
    default on CUDA) sums in a fixed order.
    """
    if one_hot is None:
        one_hot = grad.is_cuda
    if one_hot:
        return nn.functional.one_hot(codes, rows).to(grad.dtype).T @ grad
    return grad.new_zeros(rows, grad.shape[1]).index_add_(0, codes, grad)


class _SmallVocabLookup(torch.autograd.Function):
    """Row lookup whose backward is one index_add over the used rows.

    Same result as ``nn.Embedding``; its generic dense backward costs ~0.6 ms per batch-32
    update for a 44-row table, this one ~0.15 ms (:func:`lookup_table_grad`).
    """

    @staticmethod
    def forward(ctx, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(codes)
        ctx.rows = table.shape[0]
        return table.index_select(0, codes.reshape(-1)).reshape(*codes.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (codes,) = ctx.saved_tensors
        return None, lookup_table_grad(codes.reshape(-1), grad.reshape(-1, grad.shape[-1]), ctx.rows)


class GridMLP(Torso):
    """MLP torso for MiniGrid's compact grid [B, H, W, 2] (object type, state).

    Each cell's (object, state) pair is looked up in a small learned table, equivalent to a
    one-hot encoding followed by a linear map, at a fraction of the parameters. The outer ring
    of cells is skipped (:func:`inner_cell_codes`).
    """

    encode_together = True

    def __init__(self, obs_shape: tuple[int, ...], hidden: int = 256, cell_dim: int = 4):
        super().__init__()
        height, width = obs_shape[0] - 2, obs_shape[1] - 2
        self.cell_codes = nn.Parameter(torch.randn(GRID_OBJECT_TYPES * GRID_STATES, cell_dim))
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(height * width * cell_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )
        self.out_features = hidden

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return inner_cell_codes(obs)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        return self.mlp(_SmallVocabLookup.apply(codes, self.cell_codes))


class GridConv(Torso):
    """Convolutional torso for MiniGrid's compact grid [B, H, W, 2].

    The same cell lookup as :class:`GridMLP`, then two 3x3 convolutions (padding 1) before the
    fully connected layer. The convolutions see "the cell ahead is unvisited" wherever the agent
    stands, so a coverage policy learned in one part of the grid carries over to the others,
    which an MLP over the flattened grid has to learn cell by cell.
    """

    encode_together = True

    def __init__(self, obs_shape: tuple[int, ...], hidden: int = 256, cell_dim: int = 8, channels: int = 16):
        super().__init__()
        height, width = obs_shape[0] - 2, obs_shape[1] - 2
        self.cell_codes = nn.Parameter(torch.randn(GRID_OBJECT_TYPES * GRID_STATES, cell_dim))
        self.convs = nn.Sequential(
            nn.Conv2d(cell_dim, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(channels * height * width, hidden), nn.ReLU())
        self.out_features = hidden

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return inner_cell_codes(obs)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        cells = _SmallVocabLookup.apply(codes, self.cell_codes).permute(0, 3, 1, 2)
        return self.fc(self.convs(cells))


@functools.lru_cache(maxsize=8)
def _turn_offsets(size: int, padded_width: int) -> torch.Tensor:
    """[4, view²] flat offsets into the padded grid, from the view's top-left at the agent's (y, x).

    Row k is the view turned by k quarter turns counter-clockwise (torch.rot90's sense): view
    cell (i, j) reads window cell (j, n-1-i) for k=1, (n-1-i, n-1-j) for k=2, (n-1-j, i) for k=3.
    """
    n = 2 * size - 1
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    turns = [(i, j), (j, n - 1 - i), (n - 1 - i, n - 1 - j), (n - 1 - j, i)]
    return torch.stack([(r * padded_width + c).reshape(-1) for r, c in turns])


def egocentric_codes(codes: torch.Tensor, agent_code_mask: torch.Tensor, pad_code: int) -> torch.Tensor:
    """Re-centre a batch of grids [B, h, w] of cell codes on the agent, turned to face up.

    Returns [B, 2s-1, 2s-1], s = max(h, w): the agent sits in the centre cell, the cell in front
    of it is the one above the centre, and positions outside the grid hold ``pad_code``. The
    whole grid stays in view wherever the agent stands. ``agent_code_mask`` marks the agent's
    cell in each grid ([B, h, w] bool); its direction (0 right, 1 down, 2 left, 3 up) is read
    from the code as ``code % 4``: codes are ``type * GRID_STATES + state`` and the agent's state
    is its direction, plus 4 with env.visited. One pad and one gather, whatever the batch.
    """
    batch, h, w = codes.shape
    size = max(h, w)
    flat = agent_code_mask.reshape(batch, -1).to(torch.uint8).argmax(dim=1)
    y, x = flat // w, flat % w
    direction = codes.reshape(batch, -1).gather(1, flat[:, None]).squeeze(1) % 4
    padded = nn.functional.pad(codes, (size - 1, 2 * size - 1 - w, size - 1, 2 * size - 1 - h), value=pad_code)
    padded_width = padded.shape[2]
    offsets = _turn_offsets(size, padded_width).to(codes.device)
    # facing right needs a quarter turn counter-clockwise to face up, down a half turn, left three
    index = offsets[(direction + 1) % 4] + (y * padded_width + x)[:, None]
    return padded.reshape(batch, -1).gather(1, index).reshape(batch, 2 * size - 1, 2 * size - 1)


class GridEgo(Torso):
    """MLP torso over MiniGrid's grid seen from the agent: centred on it and turned to face up.

    The same cell lookup and MLP as :class:`GridMLP`, applied to :func:`egocentric_codes`. The
    input unit for "the cell in front is unvisited" is then the same wherever the agent stands
    and whichever way it faces, so what is learned in one place holds everywhere; the
    observation format (and so a pre-trained policy's interface) is unchanged.
    """

    encode_together = True

    def __init__(self, obs_shape: tuple[int, ...], hidden: int = 256, cell_dim: int = 4):
        super().__init__()
        size = max(obs_shape[0], obs_shape[1]) - 2
        self.cell_codes = nn.Parameter(torch.randn(GRID_OBJECT_TYPES * GRID_STATES, cell_dim))
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear((2 * size - 1) ** 2 * cell_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )
        self.out_features = hidden

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        codes = inner_cell_codes(obs)
        return egocentric_codes(codes, codes // GRID_STATES == AGENT_TYPE, pad_code=WALL_TYPE * GRID_STATES)

    def features(self, view: torch.Tensor) -> torch.Tensor:
        return self.mlp(_SmallVocabLookup.apply(view, self.cell_codes))


class VectorMLP(Torso):
    """MLP torso for flat float observations."""

    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.out_features = hidden

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class QHead(nn.Module):
    """Linear or dueling Q-value head."""

    def __init__(self, in_features: int, num_actions: int, dueling: bool):
        super().__init__()
        self.dueling = dueling
        self.advantage = nn.Linear(in_features, num_actions)
        self.value = nn.Linear(in_features, 1) if dueling else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        adv = self.advantage(features)
        if self.value is None:
            return adv
        return self.value(features) + adv - adv.mean(dim=1, keepdim=True)


class QNetwork(nn.Module):
    """Q(s, ·) = head(torso(s))."""

    def __init__(self, torso: nn.Module, head: QHead):
        super().__init__()
        self.torso = torso
        self.head = head

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """The torso's parameter-free input transform (the same for every copy of this network)."""
        return self.torso.encode(obs)

    def q_from_encoded(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values of a batch that :meth:`encode` has prepared."""
        return self.head(self.torso.features(x))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_from_encoded(self.torso.encode(obs))


def resolve_torso(obs_shape: tuple[int, ...], torso: str) -> str:
    """The torso ``'auto'`` stands for: ``cnn`` for 84x84 frame stacks, else ``mlp``."""
    if torso != "auto":
        return torso
    return "cnn" if len(obs_shape) == 3 and obs_shape[-1] == obs_shape[-2] == 84 else "mlp"


def build_q_network(obs_shape: tuple[int, ...], num_actions: int, *, torso: str = "auto",
                    hidden: int = 256, dueling: bool = True, channels_last: bool = False) -> QNetwork:
    """The Q-network for an observation shape: CNN for frame stacks, MLP for grids and vectors (or ``gridconv``)."""
    torso = resolve_torso(obs_shape, torso)
    if torso == "cnn":
        body: nn.Module = NatureCNN(obs_shape[0])
    elif torso == "gridconv":
        if not (len(obs_shape) == 3 and obs_shape[-1] == 2):
            raise ValueError(f"torso 'gridconv' needs a MiniGrid grid observation [H, W, 2], not {list(obs_shape)}")
        body = GridConv(obs_shape, hidden)
    elif torso == "gridego":
        if not (len(obs_shape) == 3 and obs_shape[-1] == 2):
            raise ValueError(f"torso 'gridego' needs a MiniGrid grid observation [H, W, 2], not {list(obs_shape)}")
        body = GridEgo(obs_shape, hidden)
    elif len(obs_shape) == 3 and obs_shape[-1] == 2:
        body = GridMLP(obs_shape, hidden)
    else:
        body = VectorMLP(int(torch.tensor(obs_shape).prod()), hidden)
    net = QNetwork(body, QHead(body.out_features, num_actions, dueling))
    if torso == "cnn" and channels_last:
        net = net.to(memory_format=torch.channels_last)
        body.channels_last = True
    return net
