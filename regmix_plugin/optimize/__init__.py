"""optimize stage of regmix_plugin."""
