"""What talon's signature classifier buys, and what it costs (issue #15).

talon finds signatures with a LinearSVC (scikit-learn, which pulls in scipy and numpy) that
mailbot retrains at start-up; without it, talon's brute-force rules and ours remain. This
prints, from one run, side by side:

- eval-strip on the shared corpora with the classifier and with scikit-learn made
  unimportable (the fallback every node has when the classifier fails to load);
- the size of the runtime venv and of the part that is there only for the classifier;
- the resident memory of an idle ``mailbot serve`` (the node and its analyser processes), with
  and without the classifier.

``python benchmarks/signature_classifier.py [CORPORA_DIR]``. Figures only, no assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import server_stats as stats  # sibling scripts: benchmarks/ is on the path when run
from servers import free_port

ROOT = Path(__file__).resolve().parents[1]
CORPORA = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "corpora"
# Distributions there only for the classifier (scikit-learn and what it alone needs).
CLASSIFIER_ONLY = ("sklearn", "scipy", "numpy", "joblib", "threadpoolctl", "scikit_learn",
                   "numpy.libs", "scipy.libs", "scikit_learn.libs")  # fmt: skip
# Run first in each child: scikit-learn made unimportable, so the classifier cannot load.
BLOCK = "import sys; sys.modules['sklearn'] = None; "

SCORE = """
import json, sys
from pathlib import Path
from mailbot.strip.evaluate import evaluate, load_corpus
from mailbot.strip.reply import load_signature_model
report = evaluate(load_corpus(Path(sys.argv[1])), ["mailbot"])
overall = report.tallies[("mailbot", "overall")]
print(json.dumps({"model": load_signature_model().detail[:60],
                  "passed": overall.passed, "issue": overall.passed_issue,
                  "rows": overall.scored}))
"""


def score(block: bool) -> dict[str, object]:
    code = (BLOCK if block else "") + SCORE
    out = subprocess.run(
        [sys.executable, "-c", code, str(CORPORA)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def du(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            full = Path(folder) / name
            if not full.is_symlink():
                total += full.stat().st_size
    return total


def site_packages() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"])


def idle_rss(block: bool) -> float:
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
        env.update(MAILBOT_HOME=home, MAILBOT_CONFIG="", MAILBOT_DNS="offline")
        env.update(MAILBOT_SMTP_PORT=str(free_port()), MAILBOT_HTTP_PORT=str(free_port()))
        code = (BLOCK if block else "") + "from mailbot.cli import main; main()"
        if block:  # the worker child and the analysers are spawned: block it there too
            env["PYTHONSTARTUP"] = ""
            (Path(home) / "sitecustomize.py").write_text(BLOCK)
            env["PYTHONPATH"] = home
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve"], env=env, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if "HTTP listening" in line:
                break
        else:  # it ended before it served
            raise RuntimeError(f"mailbot serve exited ({proc.wait()}) before it served")
        time.sleep(15)  # the worker process and the analysers load and train
        rss = sum(stats.rss_mb(p) for p in stats.tree(proc.pid))  # node + children
        proc.terminate()
        proc.wait(60)
        return rss


def main() -> None:
    site = site_packages()
    whole = du(site)
    only = sum(du(p) for p in site.iterdir() if p.name.split("-")[0] in CLASSIFIER_ONLY)
    with_model, without = score(False), score(True)
    rss_with, rss_without = idle_rss(False), idle_rss(True)
    print(f"corpora: {CORPORA}")
    print(f"{'':44}{'with classifier':>18}{'without':>12}")
    print(f"{'model':44}{str(with_model['model'])[:16]:>18}{str(without['model'])[:10]:>12}")
    for key, label in (
        ("passed", "eval-strip, as written"),
        ("issue", "eval-strip, issue #14's rules"),
    ):
        rows = with_model["rows"]
        print(f"{label:44}{f'{with_model[key]}/{rows}':>18}{f'{without[key]}/{rows}':>12}")
    print(f"{'site-packages (this venv), MB':44}{whole / 1e6:>18.0f}{(whole - only) / 1e6:>12.0f}")
    print(f"{'idle mailbot serve, node + children, MiB':44}{rss_with:>18.0f}{rss_without:>12.0f}")
    print("(site-packages is the venv the script runs in: the dev venv holds test tools too;"
          " the classifier's share is the same in the runtime venv)")  # fmt: skip


if __name__ == "__main__":
    main()
