"""loradeck's Textual front end: the app, its screens (reached by name through tui.navigation, never
importing each other) and widgets; heavy work runs in engine subprocesses.

May import: foundation, config, dataset, captions, train, gpu, runs, slurm, lora, cli (the launcher). Never torch,
diffusers, transformers or peft."""
