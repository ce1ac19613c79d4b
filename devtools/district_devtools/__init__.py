"""Development tooling, never shipped: local control plane, kubelet stand-in, PostgreSQL, demo."""
