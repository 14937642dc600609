"""Configuration: the TrainConfig schema, project/user settings, the layers resolved once, kohya TOML, presets.

May import: the foundation only. Never torch."""
