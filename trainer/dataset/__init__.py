"""Projects and their datasets: layout, import, probe, prep, buckets, caption files and edits, preflight.

May import: the foundation (trainer.errors, atomic, events, cli_hint) and trainer.config. Never torch."""
