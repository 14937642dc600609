"""Runs as Slurm batch jobs: the [slurm] settings, submitting and reading jobs, the job-side entry point.

May import: foundation, config, runs."""
