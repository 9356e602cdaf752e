"""The one list of top-level config keys that change where results go or how a run is shown,
never what it measures. Three places read it and must agree: the config hash (resume matches
points by it), aggregation's group hash (repeats pool by it) and Hydra's job directory names
(`${lem.not_measured_overrides:}` in conf/config.yaml). Importing it costs nothing."""

NOT_MEASURED_KEYS = ("progress", "cache_dir", "isolate", "shutdown_max_s", "resume", "dry_run", "objective",
                     "preflight", "output_root", "slurm_account", "parity")

# what Hydra's override_dirname leaves out: keys are matched exactly, so each preflight key
# is listed (a sweep over preflight.* settings would otherwise name its directories by them)
PREFLIGHT_KEYS = ("foreign_processes", "min_shm_mb", "min_free_disk_mb", "cuda_init_timeout_s")


def not_measured_overrides() -> list[str]:
    keys = [k for k in NOT_MEASURED_KEYS if k != "preflight"]
    return keys + ["preflight"] + [f"preflight.{k}" for k in PREFLIGHT_KEYS]
