"""What a mixture becomes for the run that trains on it: one module per format (Megatron-LM flags and files, Megatron-Bridge) behind a registry."""
