"""ring3's benchmark kit: peers, load generators, syscall counting, reports (see bench/run.py)."""
