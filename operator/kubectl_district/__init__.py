"""`kubectl district`: the plugin that sets up, verifies and looks after District accounts."""
