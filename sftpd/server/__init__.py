"""The district's SFTP server (`sftpd serve`): asyncssh, chrooted to the district's tree."""
