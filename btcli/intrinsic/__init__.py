"""Intrinsic rewards for reward-free pre-training: RND, NGU episodic novelty, visit counts."""

from btcli.intrinsic.counts import CountBonus
from btcli.intrinsic.episodic import EpisodicMemory, InverseDynamics, episodic_kernel_reward, lifelong_modulation
from btcli.intrinsic.rnd import RND
from btcli.intrinsic.running import RunningMean, RunningMeanStd

__all__ = ["CountBonus", "EpisodicMemory", "InverseDynamics", "RND", "RunningMean", "RunningMeanStd",
           "episodic_kernel_reward", "lifelong_modulation"]
