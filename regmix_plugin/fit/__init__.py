"""fit stage of regmix_plugin."""
