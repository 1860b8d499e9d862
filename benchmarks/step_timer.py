"""Time every training step of a training command, from outside it, without changing it.

    python benchmarks/step_timer.py --out STEPS.json --wrap MODULE:Class.method \\
        -- (-m MODULE | SCRIPT.py) ARGS...

Runs the command in this process (as ``python -m MODULE ARGS`` or ``python SCRIPT.py ARGS``
would) and, as soon as MODULE is imported by it, wraps ``Class.method`` to record the clock
when each call returns; at exit writes ``{"ends": [...], "start": ...}`` (perf_counter
seconds). `benchmarks/vs_faceswap.py` times swapd's ``Trainer.step`` and faceswap's
``Trainer.train_one_step`` this way, so both tools are measured by the same clock at the same
place: the end of each training step, everything between two steps included.

The wrap waits for the command's own import of MODULE (a hook on ``import`` statements):
importing it here first would load torch before the command set its environment up
(swapd's OpenMP wait policy, faceswap's Keras backend).
"""

from __future__ import annotations

import atexit
import builtins
import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    out = Path(options[options.index("--out") + 1])
    module_name, _, qualified = options[options.index("--wrap") + 1].partition(":")
    class_name, _, method_name = qualified.partition(".")
    record: dict[str, Any] = {"start": time.perf_counter(), "ends": [], "wrapped": False}

    def wrap_when_loaded() -> None:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is None or not hasattr(cls, method_name):  # (module still loading)
            return
        original = getattr(cls, method_name)

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            record["ends"].append(time.perf_counter())
            write()  # each step: a tool that leaves by os._exit skips atexit
            return result

        setattr(cls, method_name, timed)
        record["wrapped"] = True
        builtins.__import__ = plain_import

    plain_import = builtins.__import__

    def hooked_import(*args: Any, **kwargs: Any) -> Any:
        module = plain_import(*args, **kwargs)
        if not record["wrapped"]:
            wrap_when_loaded()
        return module

    def write() -> None:
        out.write_text(json.dumps(record), encoding="utf-8")

    atexit.register(write)
    builtins.__import__ = hooked_import
    if command[0] == "-m":
        sys.argv = [command[1], *command[2:]]
        runpy.run_module(command[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(command)
        sys.path.insert(0, str(Path(command[0]).resolve().parent))
        runpy.run_path(command[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
