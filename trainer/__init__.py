"""loradeck's headless engine: projects, datasets, captions, training, export, monitoring.

Never imports textual. Heavy imports (torch, diffusers, transformers, peft) happen inside the
functions that need them, so importing `trainer` and its CLI stays fast.
"""

__version__ = "0.1.0"
