"""`python train.py [overrides]` is `minigpt train [overrides]` (minigpt.commands.train)."""

from minigpt.commands import run_command
from minigpt.commands.train import cli

if __name__ == "__main__":
    run_command(cli)
