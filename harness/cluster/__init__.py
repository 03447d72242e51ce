"""Cluster: many-GPU launches on one node, SLURM sweeps, SLURM settings."""
