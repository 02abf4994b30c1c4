"""Stand-ins for services the tests cannot reach: only the Compute REST API (Pulumi uses its own mocks)."""
