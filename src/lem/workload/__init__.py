"""The requests a run sends: datasets, exact lengths, arrival schedules."""
