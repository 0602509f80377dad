"""Tools for finished models and runs: Hugging Face exchange, sweep reports, IsoFLOP fits."""
