"""Training: base models, the LoRA network, data and caches, the step count, the loop, resumable state,
samples, and the trainer process.

May import: foundation, config, dataset, runs (the run folder it writes), gpu (NVML samples and the estimate
it reports), lora (the file format it exports). Never textual."""
