"""`python train.py [overrides]` is `minigpt train [overrides]` (minigpt.commands.train)."""

from minigpt.commands.train import cli

if __name__ == "__main__":
    cli()
