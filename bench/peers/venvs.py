"""Private virtual environments for peers that cannot share hulk's: today arq (it pins redis-py < 6).

`arq_python()` returns the interpreter of `.venv/peers-arq` (inside the project's venv directory, so
`make clean` removes it), creating it on first use with pip: arq, uvloop and psutil, nothing of hulk.
`python -m bench.peers.venvs` creates it and prints the interpreter's path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["ARQ_REQUIREMENTS", "arq_python"]

REPO = Path(__file__).resolve().parents[2]
ARQ_VENV = REPO / ".venv" / "peers-arq"
ARQ_REQUIREMENTS = ("arq>=0.26", "uvloop>=0.19", "psutil>=5.9")


def arq_python() -> str:
    """The arq venv's interpreter, created (with pip, from the package index) when missing."""
    python = ARQ_VENV / "bin" / "python"
    marker = ARQ_VENV / ".hulk-bench-ready"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ARQ_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *ARQ_REQUIREMENTS], check=True)
        marker.write_text(" ".join(ARQ_REQUIREMENTS) + "\n")
    return str(python)


if __name__ == "__main__":
    print(arq_python())
