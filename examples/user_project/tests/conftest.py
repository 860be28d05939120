"""The aion_container_stack fixture: the project's workflows on aion in Docker containers."""

pytest_plugins = ["aion.testing.containers"]
