"""Schedules the dispatch tests use (copied from the official model code's tables; dispatch itself knows none)."""

INFINITY_1024 = [(s, s) for s in (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)]
HART_1024 = [(s, s) for s in (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)]
