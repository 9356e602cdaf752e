"""Study presets (conf/sweep/*.yaml, `python -m lem -m +sweep=<name>`) and lem's sweeper plugin
(`hydra/sweeper=lem`: Hydra's basic sweeper with a seeded shuffle of the job order)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins import basic_sweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

import hydra_plugins.lem_sweeper.lem_sweeper as plugin
import lem.config.schema
import lem.paths

# Classes are looked up on the modules at call time: Hydra's plugin scan (run by every compose)
# executes the plugin modules again, and an old LemSweeper would not be a subclass of the new
# BasicSweeper that BasicSweeper.__init__'s super(BasicSweeper, self) names.

SWEEP_DIR = lem.paths.conf_dir() / "sweep"
PRESETS = sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
NO_OPTUNA = "hydra-optuna-sweeper is not installed (pip install 'lem[optuna]')"


def header(name: str) -> str:
    """The opening comment block of a preset."""
    lines = (SWEEP_DIR / f"{name}.yaml").read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, x in enumerate(lines) if not x.startswith("#"))])


def stated_jobs(name: str) -> int:
    found = re.search(r"^# jobs: (\d+)\b", header(name), re.MULTILINE)
    assert found, f"{name}.yaml: the opening comment needs a line '# jobs: <count> (...)'"
    return int(found.group(1))


def is_optuna(name: str) -> bool:
    return "override /hydra/sweeper: optuna" in (SWEEP_DIR / f"{name}.yaml").read_text()


def compose_hydra(overrides: list[str]):
    lem.config.schema.register_configs()
    with initialize_config_dir(config_dir=str(lem.paths.conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def jobs_of(params: dict, extra: tuple[str, ...] = (), **kw) -> list[list[str]]:
    """The jobs a sweeper launches, in order: `hydra.sweeper.params` first, then the command line's
    overrides, exactly as BasicSweeper.sweep() joins them."""
    args = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(extra))
    batches = plugin.job_batches(args, kw.pop("max_batch_size", None), **kw)
    return [job for batch in batches for job in batch]


def value_of(job: list[str], key: str) -> str:
    return next(o.split("=", 1)[1] for o in job if o.split("=", 1)[0].lstrip("+") == key)


def skip_without_optuna(name: str) -> None:
    if is_optuna(name) and not HAS_OPTUNA:
        pytest.skip(NO_OPTUNA)


def test_the_presets_exist():
    assert {"precision_x_batch", "backend_shootout", "repeats", "optuna_energy"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_header_gives_package_command_and_job_count(name):
    text = header(name)
    assert text.splitlines()[0] == "# @package _global_"
    assert re.search(rf"^#\s+python -m lem -m \+sweep={name}\b", text, re.MULTILINE), text
    assert stated_jobs(name) > 0


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_job_count_matches_its_comment(name):
    skip_without_optuna(name)
    sweeper = compose_hydra([f"+sweep={name}"]).hydra.sweeper
    if is_optuna(name):
        assert sweeper._target_.endswith("OptunaSweeper")
        assert sweeper.n_trials == stated_jobs(name)
    else:
        assert sweeper._target_.endswith("BasicSweeper")
        assert len(jobs_of(dict(sweeper.params))) == stated_jobs(name)


@pytest.mark.parametrize("name", [n for n in PRESETS if not is_optuna(n)])
def test_preset_composes_with_the_lem_sweeper(name):
    sweeper = compose_hydra([f"+sweep={name}", "hydra/sweeper=lem"]).hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.lem_sweeper.lem_sweeper.LemSweeper"
    assert (sweeper.shuffle, sweeper.seed, sweeper.max_batch_size) == (False, 0, None)
    assert len(jobs_of(dict(sweeper.params))) == stated_jobs(name)


@pytest.mark.parametrize("name", PRESETS)
def test_documented_form_composes_through_the_cli(name, tmp_path):
    """`+sweep=<name>` through `python -m lem` (`--cfg` cannot be combined with `-m` in Hydra 1.3)."""
    skip_without_optuna(name)
    proc = subprocess.run([sys.executable, "-m", "lem", f"+sweep={name}", "--cfg", "hydra"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "params:" in proc.stdout


def test_basic_sweeper_varies_the_first_parameter_slowest():
    jobs = jobs_of({"a": "1,2", "b": "x,y,z"})
    assert [" ".join(j) for j in jobs] == ["a=1 b=x", "a=1 b=y", "a=1 b=z", "a=2 b=x", "a=2 b=y", "a=2 b=z"]


def test_repeats_are_interleaved_across_configurations():
    params = dict(compose_hydra(["+sweep=repeats"]).hydra.sweeper.params)
    assert next(iter(params)).lstrip("+") == "repeat", "repeat must be the first (slowest) parameter"
    # a key given on the command line replaces the preset's values in place: still interleaved
    for extra in ((), ("+sweep=repeats", "precision=fp32,bf16", "model=tiny")):
        jobs = jobs_of(params, extra)
        repeats = [int(value_of(j, "repeat")) for j in jobs]
        assert repeats == sorted(repeats) and set(repeats) == {0, 1, 2}
        points = [[sorted(o for o in j if "repeat=" not in o) for j in jobs if value_of(j, "repeat") == str(r)]
                  for r in range(3)]
        assert points[0] == points[1] == points[2]  # every repeat runs every point, in the same order
        assert len(points[0]) == len(jobs) // 3


def test_repeats_have_their_own_config_hash(compose):
    """`resume` skips a point whose config hash already has an ok result: repeats must differ."""
    hashes = {lem.config.schema.config_hash(compose([f"++repeat={r}"])) for r in range(3)}
    assert len(hashes) == 3


PARAMS = {"++repeat": "range(3)", "precision": "fp32,fp16,bf16", "batching.batch_size": "1,4,16"}


@pytest.mark.parametrize("max_batch_size", [None, 1, 4, 27, 100])
def test_unshuffled_jobs_are_exactly_basic_sweepers(max_batch_size):
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in PARAMS.items()])
    assert plugin.job_batches(overrides, max_batch_size) == basic_sweeper.BasicSweeper.split_arguments(
        overrides, max_batch_size)


def test_shuffle_is_a_permutation_stable_for_a_seed_and_different_for_another():
    plain = jobs_of(PARAMS)
    seed0 = jobs_of(PARAMS, shuffle=True, seed=0)
    assert sorted(seed0) == sorted(plain) and len(seed0) == 27
    assert seed0 != plain
    assert jobs_of(PARAMS, shuffle=True, seed=0) == seed0
    assert jobs_of(PARAMS, shuffle=True, seed=1) != seed0
    assert jobs_of(PARAMS, shuffle=False, seed=1) == plain  # the seed alone changes nothing


def test_shuffle_happens_before_batching():
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in PARAMS.items()])
    batches = plugin.job_batches(overrides, 4, shuffle=True, seed=7)
    assert [len(b) for b in batches] == [4] * 6 + [3]
    assert [j for b in batches for j in b] == jobs_of(PARAMS, shuffle=True, seed=7)


def test_the_sweeper_splits_with_its_own_options():
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in PARAMS.items()])
    sweeper = plugin.LemSweeper(max_batch_size=None, params=None, shuffle=True, seed=5)
    assert sweeper.split_arguments(overrides, 10) == plugin.job_batches(overrides, 10, shuffle=True, seed=5)
    assert plugin.LemSweeper(max_batch_size=None).split_arguments(overrides, None) == [jobs_of(PARAMS)]


def test_hydra_discovers_the_lem_sweeper(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lem", "--info", "plugins"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Sweeper:[\s\S]*LemSweeper", proc.stdout), proc.stdout


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_real_multirun_launches_in_the_planned_order(shuffle, tmp_path, lem_cache):
    """`python -m lem -m +sweep=repeats ...` with lem's dry run (validates every point, loads nothing):
    the order Hydra launches the jobs in is job_batches' order (interleaved, or shuffled by seed)."""
    if "dry_run" not in compose_hydra([]):
        pytest.skip("needs lem's dry_run key (python -m lem -m ... dry_run=true)")
    cli = ["+sweep=repeats", "precision=fp32,bf16", "batching.batch_size=1,4", "gpus=[]", "dry_run=true"]
    sweeper = ["hydra/sweeper=lem", f"hydra.sweeper.shuffle={str(shuffle).lower()}", "hydra.sweeper.seed=3"]
    env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "lem", "-m", *cli, *sweeper], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    launched = re.findall(r"\t#\d+ : (.*)", proc.stdout + proc.stderr)
    planned = jobs_of(PARAMS, tuple(cli), shuffle=shuffle, seed=3)
    assert launched == [" ".join(j) for j in planned]
    assert len(launched) == 12
    repeats = [int(value_of(j, "repeat")) for j in planned]
    if shuffle:
        assert repeats != sorted(repeats)
    else:
        assert repeats == sorted(repeats)


# optuna 2.x's storage module uses SQLAlchemy 1.4 APIs that warn about 2.0 on import
@pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna.*")
def test_optuna_preset_minimises_over_precision_and_batch_size_under_a_latency_bound():
    if not HAS_OPTUNA:
        pytest.skip(NO_OPTUNA)
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    cfg = compose_hydra(["+sweep=optuna_energy"])
    sweeper = cfg.hydra.sweeper
    assert str(sweeper.direction).endswith("minimize")
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert set(space) == {"precision", "batching.batch_size"} and not fixed
    precisions = {p.stem for p in (lem.paths.conf_dir() / "precision").glob("*.yaml")}
    assert set(space["precision"].choices) <= precisions
    assert all(isinstance(b, int) and b > 0 for b in space["batching.batch_size"].choices)
    assert cfg.objective.metric == "j_per_output_token"
    assert cfg.objective.max_ttft_p99_s == 1.0
