"""Write the summary of a finished study's run folder as a small JSON for the repository (bench/), from which the
docs render its numbers: the command and commit, the machine and timings, and every task's comparison of each
intervention with the baseline and its controls; with --validity, the correlations of two task metrics too.

    python scripts/study_evidence.py runs/study bench/study-gemma270m.json --command "xlens sweep ..."
    python scripts/study_evidence.py runs/validity bench/validity-gemma270m.json --validity retrieval.top1 \
        transfer.accuracy --command "xlens sweep ..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from xlens._io import produced_by, write_json
from xlens.evaluation import task_class
from xlens.runs.results import RunResults


def _records(frame: Any) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def summary(folder: Path, command: str, validity: list[str] | None) -> dict[str, Any]:
    results = RunResults.load(folder)
    out: dict[str, Any] = {
        "command": command,
        "commit": results.provenance.get("commit") or produced_by()["commit"],
        "config": results.config.to_dict(),
        "machine": results.provenance["machine"],
        "timings": results.provenance["timings"],
        "conditions": [c.label for c in results.conditions],
        "comparisons": {
            task: {m: _records(results.comparison(m, task=task)) for m in task_class(task).metrics}
            for task in results.config.evaluate.tasks
        },
        "summary": results.study_summary(),
    }
    if validity:
        x, y = validity
        out["validity"] = {
            across: _records(results.validity(x, y, across=across, layers=results.layers))
            for across in ("languages", "conditions")
            if across == "languages" or len(results.conditions) >= 3
        }
        out["language_values"] = _records(results.paired_values(x, y, results.layers))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--command", required=True, help="the command that produced the run folder")
    parser.add_argument("--validity", nargs=2, metavar=("X", "Y"), help="task metrics to correlate")
    args = parser.parse_args()
    write_json(args.out, summary(args.folder, args.command, args.validity))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
