"""The result schema (result.json) and its console summary."""
