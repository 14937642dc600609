"""GPU memory: NVML sampling, who is on which GPU, the VRAM estimate and what a run needs to start.

May import: the foundation, trainer.config and trainer.train (model shapes). Never textual."""
