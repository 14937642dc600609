"""loradeck's Textual front end. Never imports torch, diffusers, transformers or peft."""
