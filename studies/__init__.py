"""The paper's studies: run them (MLflow), export their per-seed data, and write docs/RESULTS.md from it."""
