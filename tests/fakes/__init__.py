"""Stand-ins for services the tests cannot reach: Google's REST APIs (Compute, OS Login, Service Usage, Resource
Manager), spoken to by the real clients. Pulumi uses its own mocks."""
