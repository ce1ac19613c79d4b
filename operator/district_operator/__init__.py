"""district-sftp's control plane: the kopf operator that turns District resources into SFTP accounts."""

__version__ = "0.1.0"
