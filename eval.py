"""`python eval.py [overrides]` is `minigpt eval [overrides]` (minigpt.commands.eval)."""

from minigpt.commands.eval import main

if __name__ == "__main__":
    main()
