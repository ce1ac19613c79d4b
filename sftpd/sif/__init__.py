"""`sftpd sif-pull`: a SIF 2.x pull-mode agent writing the zone's objects as one upload epoch."""
