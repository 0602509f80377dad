"""`python export.py [overrides]` is `minigpt export [overrides]` (minigpt.commands.export)."""

from minigpt.commands import run_command
from minigpt.commands.export import main

if __name__ == "__main__":
    run_command(main)
