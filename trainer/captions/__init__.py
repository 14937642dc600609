"""Auto-captioning a dataset: BLIP captions and WD14 booru tags, run over a project.

May import: foundation, config, dataset. torch, transformers and onnxruntime only inside functions."""
