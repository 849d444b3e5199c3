"""The DQN agent: networks, learner and replay."""
