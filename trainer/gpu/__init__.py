"""GPU memory: NVML sampling, who is on which GPU, the VRAM estimate and its cache, what a run needs to start.

May import: foundation, config, train (the trainer's model and network setup, traced on meta). Never textual."""
