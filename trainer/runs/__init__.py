"""Training runs from the outside: the run folder, its states, create/launch/watch/stop/resume, the queue,
sample grids, a project's one-line summary.

May import: foundation, config, dataset, train, gpu, slurm (a Slurm run's state comes from Slurm)."""
