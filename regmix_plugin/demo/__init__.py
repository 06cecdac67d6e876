"""demo stage of regmix_plugin."""
