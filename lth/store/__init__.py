"""MLflow: plumbing, chains and their claims, chain identity, loadable tickets, UI views and the server; no Lightning."""
