"""Training: the LightningModule, optimizers, schedules, callbacks and the life of a run
(minigpt.training.run)."""
