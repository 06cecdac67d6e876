"""megatron stage of regmix_plugin."""
