"""A real two-node Ray cluster on 127.0.0.1: `ray start --head` plus a second `ray start --address`,
a small sweep with --address, trials on both nodes, both nodes stopped (only this test's processes)."""
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from helpers import free_port, tiny_grid_sweep

SPACE = tiny_grid_sweep("cluster")


def _stop(marker: str) -> None:
    """Stop the processes of this test's cluster only (`ray stop` would stop every Ray on the machine)."""
    procs = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=15)


@pytest.mark.slow
def test_sweep_runs_on_both_nodes_of_a_two_node_cluster(tmp_path):
    port = free_port()
    temp = f"/tmp/rt-{uuid.uuid4().hex[:8]}"  # short: Ray's socket paths have a length limit
    ray = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    # token authentication (on by default in Ray 2.60) is switched off for this throw-away local cluster;
    # on a real cluster every node and driver gets RAY_AUTH_TOKEN instead (README)
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    t0 = time.time()
    try:
        subprocess.run([ray, "start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false",
                        *common], check=True, capture_output=True, text=True, timeout=120, env=env)
        subprocess.run([ray, "start", "--address", f"127.0.0.1:{port}", *common], check=True, capture_output=True,
                       text=True, timeout=120, env=env)
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(dict(SPACE, runs_dir=str(tmp_path / "runs"))))
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"  # --address defaults to $RAY_ADDRESS
        res = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", "space.yaml"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    finally:
        _stop(temp)
        _stop(f"127.0.0.1:{port}")
    nodes = set()
    for d in (tmp_path / "runs" / "cluster").glob("trial_*"):
        rows = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines() if ln.strip()]
        assert rows[-1]["epoch"] == 2
        nodes.add(rows[-1]["node_id"])
    assert len(nodes) == 2  # one trial on the head, one on the second node
    left = [p for p in psutil.process_iter(["cmdline", "status"])
            if temp in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert not left, left
    print(f"two-node cluster test: {time.time() - t0:.0f}s")
