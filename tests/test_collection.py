"""`pytest -m gpu` from the root must collect on the GPU host, which has torch, triton, pandas, pyarrow,
pytest and Hydra but not Ray, MLflow, matplotlib, rich, psutil or Pillow: a test module that needs one
of those skips itself (`pytest.importorskip`) instead of aborting the whole collection."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_GPU_HOST = ("ray", "mlflow", "matplotlib", "rich", "psutil", "PIL")


def hide_packages(where: Path, names: tuple[str, ...]) -> None:
    """A package directory per name, first on PYTHONPATH, that fails to import as a missing one does."""
    for name in names:
        (where / name).mkdir()
        (where / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}' (hidden by {__name__})\", name={name!r})\n"
        )


def test_gpu_tests_collect_without_ray_mlflow_and_the_report_packages(tmp_path):
    hide_packages(tmp_path, ABSENT_ON_THE_GPU_HOST)
    path = os.pathsep.join(filter(None, [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        # no cacheprovider: this run must not touch the checkout's .pytest_cache
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "error" not in done.stdout.splitlines()[-1].lower(), output[-4000:]
    assert "could not import 'mlflow'" in output, "the hidden packages were not hidden"
