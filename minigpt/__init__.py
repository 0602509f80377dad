"""minigpt: small GPT-like language models, built from fundamentals and trained with
Lightning and Hydra."""
