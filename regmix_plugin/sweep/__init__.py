"""sweep stage of regmix_plugin."""
