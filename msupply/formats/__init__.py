"""Per-language date and time formats, found through FORMAT_MODULE_PATH."""
