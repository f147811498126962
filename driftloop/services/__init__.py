"""Use cases shared by the CLI, the HTTP API and the Prefect flows: plain functions over the
adapters (store, tracking, alerts), with no Prefect and no FastAPI, so each is tested as it is."""
