"""One Hydra job: the point, its isolated child process, the order of phases, sweep control."""
