"""A backend stand-in for measurement tests where no GPU can exist: it 'generates' by waiting a
fixed time per step and timestamps each token exactly as the real backends do."""

import time

from lem.backends.base import BatchRecord, PrecisionInfo

STEP_S = 0.02
PREFILL_S = 0.05


class TimedBackend:
    def __init__(self, load_s: float = 1.5):
        self.load_s = load_s

    def load(self, source, precision, gpus):
        time.sleep(self.load_s)
        return PrecisionInfo("bfloat16", "bfloat16", "bfloat16", None, {"bfloat16": 1.0})

    def generate(self, batch, force_output_len):
        submit = time.perf_counter()
        time.sleep(PREFILL_S)
        steps = max(r.output_len for r in batch)
        times = []
        for _ in range(steps):
            times.append(time.perf_counter())
            time.sleep(STEP_S)
        return BatchRecord(submit, [r.output_len for r in batch], [times[: r.output_len] for r in batch])

    def model_info(self):
        arch = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "hidden_size": 4096}
        return {"num_params": 8_030_261_248, "param_bytes": 16_060_522_496, "arch": arch}

    def reset_peak_memory(self):
        pass

    def peak_memory(self):
        return []

    def close(self):
        pass
