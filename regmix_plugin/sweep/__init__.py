"""The study file and its launch backends (local, Slurm) behind one Backend protocol, the per-run supervisor and its state."""
