"""The launch material in cluster/: every YAML parses, every script is valid bash, and what they run
exists — entrypoints are sweeps `attnsweep run` accepts, files they name are in the repository."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))
SCRIPTS = sorted([*CLUSTER.glob("*.sh"), *CLUSTER.glob("*.sbatch")])


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest(kind: str) -> dict:
    found = [doc for path in YAMLS for doc in documents(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in cluster/, found {len(found)}"
    return found[0]


def check_sweep_command(command: str) -> list[str]:
    """`python3 -m orchestrator run OVERRIDES`: the overrides are a sweep `attnsweep run` accepts."""
    words = shlex.split(command)
    assert words[:4] == ["python3", "-m", "orchestrator", "run"], command
    assert (ROOT / "orchestrator" / "__main__.py").is_file()
    cfg = load_config(words[4:])  # ConfigError (an unknown sweep or key) fails the test
    assert cfg.results_dir.startswith("/") and cfg.reports_dir.startswith("/"), (
        "the driver's cwd is temporary"
    )
    return words[4:]


def gpu_workers(cluster_spec: dict) -> list[dict]:
    containers = [
        container
        for group in cluster_spec["workerGroupSpecs"]
        for container in group["template"]["spec"]["containers"]
    ]
    return [c for c in containers if c["resources"]["limits"].get("nvidia.com/gpu")]


def images(cluster_spec: dict) -> set[str]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return {c["image"] for group in groups for c in group["template"]["spec"]["containers"]}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses(path):
    assert documents(path), f"{path} is empty"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(path):
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_local_scripts_are_executable():
    for name in ("local-up.sh", "local-down.sh", "mlflow-server.sh"):
        assert (CLUSTER / name).stat().st_mode & 0o111, f"cluster/{name} is not executable"


def test_rayjob_runs_a_valid_sweep_and_ends():
    job = manifest("RayJob")["spec"]
    overrides = check_sweep_command(job["entrypoint"])
    assert "ray.address=auto" in overrides
    assert job["shutdownAfterJobFinishes"] is True and job["activeDeadlineSeconds"] > 0
    assert job["rayClusterSpec"]["authOptions"]["mode"] == "token"
    assert gpu_workers(job["rayClusterSpec"])


def test_raycluster_has_gpu_workers_token_auth_and_the_results_volume():
    spec = manifest("RayCluster")["spec"]
    assert gpu_workers(spec)
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]  # never the token itself
    claim = manifest("PersistentVolumeClaim")["metadata"]["name"]
    for cluster_spec in (spec, manifest("RayJob")["spec"]["rayClusterSpec"]):
        volumes = cluster_spec["headGroupSpec"]["template"]["spec"]["volumes"]
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == [claim]


def test_one_image_and_one_ray_version_everywhere():
    raycluster, rayjob = manifest("RayCluster")["spec"], manifest("RayJob")["spec"]["rayClusterSpec"]
    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    assert images(raycluster) == images(rayjob) == {launcher["docker"]["image"]}
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert raycluster["rayVersion"] == rayjob["rayVersion"] == ray_version


def test_launcher_config_has_a_gpu_worker_type_and_a_private_dashboard():
    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    node_types = launcher["available_node_types"]
    assert launcher["head_node_type"] in node_types and "gpu_worker" in node_types
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert any("ray start --address=" in c for c in launcher["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in " ".join(launcher["docker"]["run_options"])


def test_slurm_script_starts_ray_on_every_node_and_runs_a_sweep():
    script = (CLUSTER / "slurm-sweep.sbatch").read_text()
    assert re.search(r"^#SBATCH --nodes=\d+$", script, re.M)
    assert "ray start --head --block" in script and "ray start --block --address=" in script
    sweeps = [line for line in script.splitlines() if line.startswith("python3 -m orchestrator run ")]
    assert len(sweeps) == 1 and 'ray.address="$head_ip:$port"' in sweeps[0] and sweeps[0].endswith('"$@"')


def test_dockerfile_copies_what_exists():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert sources and all((ROOT / source).exists() for source in sources), sources


def test_cluster_readme_covers_every_file():
    readme = (CLUSTER / "README.md").read_text()
    for path in [*YAMLS, *SCRIPTS, CLUSTER / "Dockerfile"]:
        assert str(path.relative_to(CLUSTER)) in readme, f"cluster/README.md does not mention {path.name}"


def test_local_up_refuses_a_state_dir_too_long_for_rays_sockets(tmp_path):
    state = tmp_path / ("x" * 40)  # before anything starts: nothing to stop
    refused = subprocess.run(
        ["bash", str(CLUSTER / "local-up.sh"), str(state)], capture_output=True, text=True
    )
    assert refused.returncode == 1 and "longer than 30 characters" in refused.stderr
    assert not state.exists()
