"""`python explain.py [overrides]` is `minigpt explain [overrides]` (minigpt.commands.explain)."""

from minigpt.commands import run_command
from minigpt.commands.explain import main

if __name__ == "__main__":
    run_command(main)
