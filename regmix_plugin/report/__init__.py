"""report stage of regmix_plugin."""
