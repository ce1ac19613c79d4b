"""district-sftp's data plane: the district's SFTP server and the jobs that run beside it."""

__version__ = "0.1.0"
