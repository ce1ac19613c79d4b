"""Local servers for development and tests: a real Kubernetes control plane and a throwaway PostgreSQL."""
