"""What the operator and the data plane agree on, and nothing else: stdlib only, imported by both.

- `layout`: the district's tree, the pod's mount paths, ports and user;
- `commands`: the `sftpd` subcommands, their options' environment variables, the exit codes;
- `results`: the one-line JSON result a job leaves in its termination message;
- `keyoptions`: the authorized_keys options the server honours, judged the same on both sides.
"""
