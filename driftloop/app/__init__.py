"""The application layer: the `driftloop` CLI and the HTTP API, above the flows and services."""
