"""Screenshots of the IDEs that `make demo` left running, for the README (docs/img/).

    .venv/bin/python scripts/screenshots.py [--dir .cluster] [--out docs/img]

Logs in exactly as the README tells a person to: runs each workspace's credential command from
`reconcile status`, opens its URL in Debian's Chromium mapped to the demo's ingress, pastes what
the command printed, and saves the IDE once it shows (tests/e2e/ides.py does the browser part).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from tests.e2e import ides  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=ROOT / ".cluster")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    a = ap.parse_args()
    import ingress
    import launcher

    served = ingress.load(a.dir / "ingress")
    kubeconfig = a.dir / "admin.kubeconfig"
    status = subprocess.run([sys.executable, "-m", "reconciler", "status", "--output", "json", "--kubeconfig",
                             str(kubeconfig)], cwd=ROOT, check=True, capture_output=True, text=True)
    for w in json.loads(status.stdout)["workspaces"]:
        tool = "jupyterlab" if w["url"].endswith("/lab") else "vscode"
        printed = ides.run_posted_command(w["credentialHint"], kubeconfig, launcher.binary_dir())
        secret = ides.credential(tool, printed.stdout)
        shot = a.out / f"{tool}.png"
        ides.browser_login(ides.Ingress(served.port, served.ca_cert), w["url"], tool, secret, shot)
        print(f"{w['name']}: {shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
