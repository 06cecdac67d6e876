"""Proxy mixtures for a sweep: RegMix's sampler with its caps and fixes, its settings, repetition-matched subsets."""
