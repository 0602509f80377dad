"""`python prepare.py [overrides]` is `minigpt prepare [overrides]` (minigpt.commands.prepare)."""

from minigpt.commands import run_command
from minigpt.commands.prepare import main

if __name__ == "__main__":
    run_command(main)
