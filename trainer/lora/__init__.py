"""Finished adapters: the LoRA file format, validation, conversion, publishing, packs and the shared folder.

May import: the foundation, trainer.config, trainer.dataset and trainer.runs."""
