"""One list of keys that do not change what is measured, read alike by the config hash (resume),
aggregation's group hash (pooling) and Hydra's job directory names."""

from dataclasses import fields

from omegaconf import OmegaConf

from lem.aggregate.read import group_hash
from lem.config.not_measured import NOT_MEASURED_KEYS, PREFLIGHT_KEYS, not_measured_overrides
from lem.config.schema import PreflightConfig, config_hash


def _plain(cfg) -> dict:
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return data


def test_runs_differing_only_in_output_root_are_one_point_for_resume_and_for_aggregation(compose):
    a = _plain(compose(["output_root=/data/a", "progress=false"]))
    b = _plain(compose(["output_root=/data/b"]))
    assert config_hash(a) == config_hash(b)
    assert group_hash(a) == group_hash(b)


def test_a_measured_key_changes_both_hashes(compose):
    a = _plain(compose([]))
    b = _plain(compose(["batching.batch_size=8"]))
    assert config_hash(a) != config_hash(b) and group_hash(a) != group_hash(b)


def test_every_not_measured_key_is_a_top_level_key_and_every_preflight_key_is_listed(compose):
    cfg = compose([])
    assert set(NOT_MEASURED_KEYS) <= set(cfg.keys())
    assert set(PREFLIGHT_KEYS) == {f.name for f in fields(PreflightConfig)}


def test_hydra_job_dir_names_leave_out_the_same_keys():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import lem.config.schema
    import lem.paths

    lem.config.schema.register_configs()
    with initialize_config_dir(config_dir=str(lem.paths.conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True,
                            overrides=["output_root=/x", "preflight.min_shm_mb=10",
                                       "batching.batch_size=2"])
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert excluded == not_measured_overrides()
    assert {"output_root", "preflight.min_shm_mb", "progress"} <= set(excluded)
