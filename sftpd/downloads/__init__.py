"""Server-to-district downloads: the documents contract, docviewer epochs and their URL tokens."""
