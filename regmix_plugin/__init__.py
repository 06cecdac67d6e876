"""regmix_plugin: choose a pretraining data mixture by regression (RegMix, Data Mixing Laws) for Megatron."""

__version__ = "0.1.0"
