"""A training's progress bar in a SLURM job log: at most one line per interval, however often it sets the loss."""

import io
import time

from adatosk.progress import progress


def test_setting_the_postfix_every_step_writes_no_extra_lines_to_a_log():
    stream = io.StringIO()
    with progress(total=300, desc="epoch 1/2", file=stream, log_interval=0.2) as bar:
        for step in range(300):
            bar.update()
            bar.set_postfix(loss=f"{1 / (step + 1):.4f}")      # what the training loop does on every step
            bar.set_description(f"epoch 1/2 step {step}")
            bar.set_postfix_str(f"loss={step}")
            time.sleep(0.002)                               # about 0.6 s: about 3 intervals, 300 postfixes
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 6, lines
    assert "300/300" in lines[-1] and "loss=299" in lines[-1] and lines[-1].startswith("epoch 1/2 step 299")
