"""bench/lora_throughput.py refuses a step count that would leave nothing to time, before it builds anything."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import lora_throughput


def test_too_few_steps_to_time_is_refused_with_the_reason(capsys):
    with pytest.raises(SystemExit) as exit_info:
        lora_throughput.main(["--steps", str(lora_throughput.UNTIMED_STEPS)])
    assert exit_info.value.code == 2
    assert "--steps 3 leaves no step to time: the first 3 are not timed" in capsys.readouterr().err
