"""Pre-flight checks of the machine before a run loads anything."""
