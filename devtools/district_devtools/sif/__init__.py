"""A SIF 2.x Zone Integration Server stand-in, its test CA and its data (tests and bench only)."""
