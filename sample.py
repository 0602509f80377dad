"""`python sample.py [overrides]` is `minigpt sample [overrides]` (minigpt.commands.sample)."""

from minigpt.commands import run_command
from minigpt.commands.sample import main

if __name__ == "__main__":
    run_command(main)
