"""Projects and their datasets: folder layout, import, image probing, prep and buckets, caption files, batch
caption edits and their undo, preflight, dataset formats, the demo project.

May import: foundation, config, train (preflight checks a dataset against the trainer's own rules)."""
