"""Training: base models, the LoRA network, data and caches, the loop, resumable state, samples, the trainer process.

May import: the foundation, trainer.config, trainer.dataset and trainer.runs.files. Never textual."""
