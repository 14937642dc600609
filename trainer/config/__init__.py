"""Configuration: the TrainConfig schema, project.toml and user settings, the layers resolved once into a
run, the kohya TOML mapping, presets, and which architecture a base model is.

May import: foundation, dataset (config.resolve: a run's config is resolved for a project and its images)."""
