"""proxy stage of regmix_plugin."""
