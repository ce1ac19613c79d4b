"""`sftpd gateway`: one SSH address for many districts, each login routed to its own server."""
