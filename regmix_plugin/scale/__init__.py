"""scale stage of regmix_plugin."""
