"""Epoch processing: find complete uploads, import recognized formats, log and move them."""
