"""Writes the RBAC objects of charts/karo, rendered by real Helm with the
default values (release `karo` in namespace `karo-system`), as one JSON
list: karo's end-to-end test runs the operator with exactly these rights.

Usage: python tests/karo/render_rbac.py OUT.json   (in the chart-test venv)
"""

import json
import pathlib
import sys

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def main(out):
    chart = helm.Chart.load(str(ROOT / "charts" / "karo"))
    rendered = chart.render({}, name="karo", namespace="karo-system")
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") in KINDS:
                objects.append(doc)
    if not any(o["kind"] == "ClusterRole" for o in objects):
        sys.exit("the chart rendered no ClusterRole")
    pathlib.Path(out).write_text(json.dumps(objects, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
