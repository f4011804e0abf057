"""Plot the scaling simulation's CSV (tests/tests/scaling.rs): queue depth, what KEDA's Redis
list trigger would see (the base list alone), and replicas over time. Usage:
plot-scaling.py scaling.csv scaling.png"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["depth"]]
    t = [float(r["t_s"]) for r in rows]
    fig, depth_ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    depth_ax.plot(t, [int(r["depth"]) for r in rows], label="depth (all priority lists + unacked)")
    depth_ax.plot(t, [int(r["base_list_only"]) for r in rows], "--", label="base list only (KEDA redis trigger)")
    depth_ax.set_xlabel("seconds")
    depth_ax.set_ylabel("messages")
    replicas_ax = depth_ax.twinx()
    replicas_ax.step(t, [int(r["replicas"]) for r in rows], where="post", color="tab:green", label="replicas")
    replicas_ax.set_ylabel("replicas")
    replicas_ax.set_ylim(0, max(int(r["replicas"]) for r in rows) + 1)
    lines = depth_ax.get_legend_handles_labels()
    more = replicas_ax.get_legend_handles_labels()
    depth_ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", bbox_to_anchor=(0.0, -0.22), ncol=3, fontsize=7)
    depth_ax.set_title("celeriac scaling simulation (target 4 tasks per replica, 1..4 replicas)", fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
