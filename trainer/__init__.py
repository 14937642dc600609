"""loradeck's headless engine. Its top level is the foundation every package builds on: errors, events,
atomic writes, child processes, the cache folder, command hints, hub access, process info.

May import: nothing of the engine's packages (`__main__` starts the CLI). Never textual; heavy libraries
(torch, diffusers, transformers, peft) only inside the functions that need them, so the CLI starts fast.
"""

__version__ = "0.1.0"
