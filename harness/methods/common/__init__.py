"""What several methods share: rope tables, attention kernels, key buffers, banded positions, log-n, frequencies."""
