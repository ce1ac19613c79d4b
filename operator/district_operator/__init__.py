"""district-sftp's control plane: a kopf operator turning Districts into SFTP accounts."""

__version__ = "0.1.0"
