"""Continual pretraining: the replay-proportion sweep, its law fit and critical proportion, and their CLI."""
