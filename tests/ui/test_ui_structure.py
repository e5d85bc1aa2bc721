"""How local_ui is put together: no import cycle through the package, screens named after pages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LOCAL_UI = Path(__file__).resolve().parents[2] / "local_ui"


def test_package_imports_nothing() -> None:
    """`import local_ui` loads no screen module: `local_ui.web` imports the package, not back."""
    probe = ("import sys, local_ui; "
             "print(sorted(m for m in sys.modules if m.startswith('local_ui.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
    assert (LOCAL_UI / "app.py").exists()
