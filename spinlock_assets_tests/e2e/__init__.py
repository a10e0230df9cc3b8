"""End-to-end tests against a real ``dagster dev`` (marked ``slow``)."""
