"""How long `python -m lem --cfg job` and `--help` take (issue 2: <= 1.5 s on the 2-core machine).

Nothing heavy may be imported before Hydra has composed the config; this measures that it stays
so. Each command runs REPS times in a fresh interpreter; prints median, min and max wall time.

    python benchmarks/cli_startup.py [REPS]
"""

import statistics
import subprocess
import sys
import time

COMMANDS = {
    "--cfg job": [sys.executable, "-m", "lem", "--cfg", "job"],
    "--help": [sys.executable, "-m", "lem", "--help"],
    "--cfg job (with overrides)": [sys.executable, "-m", "lem", "model=llama3-8b-random",
                                   "precision=bf16", "batching.batch_size=16", "--cfg", "job"],
}


def time_command(cmd: list[str], reps: int) -> list[float]:
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    return walls


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    time_command(COMMANDS["--cfg job"], 1)  # warm the page cache
    for name, cmd in COMMANDS.items():
        w = time_command(cmd, reps)
        print(f"{name:26s} median {statistics.median(w):.3f} s  min {min(w):.3f}  max {max(w):.3f}"
              f"  (n={reps})")


if __name__ == "__main__":
    main()
