"""bench/scaling.png: time against workspaces, both tools."""

from __future__ import annotations

from pathlib import Path

from bench.samples import SizeResult


def plot(results: dict[int, SizeResult], path: Path) -> str | None:
    """Time against workspaces for both tools; returns why not when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    sizes = sorted(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [("no-op plan", [("reconcile --dry-run", "plan_noop_s", "C0"),
                              ("kubectl diff --server-side", "kubectl_diff_noop_s", "C3")]),
              ("apply creating everything", [("reconcile --no-wait", "apply_create_s", "C0"),
                                             ("kubectl apply --server-side", "kubectl_apply_create_s", "C3")])]
    for ax, (title, lines) in zip(axes, panels, strict=True):
        for label, key, color in lines:
            pts = [(n, t) for n in sizes if (t := results[n].median(key)) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label, color=color)
            if len(pts) > 1 and color == "C0":  # what linear growth from the smallest size would look like
                n0, t0 = pts[0]
                ax.plot([p[0] for p in pts], [t0 * p[0] / n0 for p in pts], ":", color="grey",
                        label="linear from the smallest size")
        ax.set_title(title)
        ax.set_xlabel("workspaces (3 objects each)")
        ax.set_ylabel("seconds (median)")
        if len(sizes) > 1 and max(sizes) / min(sizes) >= 10:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("workspace-gitops reconciler vs kubectl (local kube-apiserver + etcd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
