"""Auto-captioning a dataset: BLIP captions and WD14 booru tags, run over a project.

May import: the foundation, trainer.config and trainer.dataset. torch/transformers/onnxruntime only inside functions."""
