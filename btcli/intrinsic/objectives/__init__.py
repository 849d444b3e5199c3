"""One module per pre-training objective (btcli/intrinsic/registry.py says what each declares)."""
