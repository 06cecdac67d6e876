"""Saturating laws (power and exponential) and their batched robust solver, shared by the scaling and continual-training stages."""
