"""Mixture reuse (Olmix): re-search only the domains a data change touched; plans, reduced runs and studies."""
