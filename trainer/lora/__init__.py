"""Finished adapters: the LoRA file format, validation, conversion, publishing, packs and the shared folder.

May import: foundation, config, dataset, runs, train (the load check loads the base model)."""
