"""The engine layer: transactions, recovery, checkpoints, the read path."""
