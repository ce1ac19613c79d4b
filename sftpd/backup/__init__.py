"""`sftpd backup`: verified PostgreSQL exports into the district's downloads/backups/."""

from sftpd.backup.command import add_arguments, run

__all__ = ["add_arguments", "run"]
