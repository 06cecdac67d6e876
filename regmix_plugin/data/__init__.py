"""data stage of regmix_plugin."""
