"""Training runs from the outside: the run folder, create/launch/state/stop/resume, the queue, sample grids.

May import: the foundation, trainer.config, trainer.dataset and trainer.gpu. Starts trainer.train.process as a child."""
