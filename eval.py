"""`python eval.py [overrides]` is `minigpt eval [overrides]` (minigpt.commands.eval)."""

from minigpt.commands import run_command
from minigpt.commands.eval import main

if __name__ == "__main__":
    run_command(main)
