"""The bottom floor: the model, tokenizers, decoding, checkpoint files read back and
the model looked inside. torch and numpy only: no Lightning, no Hydra."""
