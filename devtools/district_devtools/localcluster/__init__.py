"""Local servers for development and tests: a real control plane and a throwaway PostgreSQL."""
