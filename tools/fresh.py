"""`make book FRESH=1`: move a profile's records and results aside, so the next build recomputes everything.

Nothing is deleted: the old folder is renamed `<results_dir>.before-<UTC time>` (outside git's view only
if you ignore it; for the published profile, `git status` shows the move until the build rewrites them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from widedeep import profiles


def move_aside(results_dir: Path) -> Path | None:
    """Rename `results_dir` to a dated sibling; return the new path (None when there was nothing)."""
    if not results_dir.exists():
        return None
    target = results_dir.with_name(f"{results_dir.name}.before-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    results_dir.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    profile = profiles.load_profile(args.profile)
    moved = move_aside(Path(profile.results_dir))
    print(f"FRESH: {profile.results_dir} moved to {moved}" if moved else f"FRESH: nothing in {profile.results_dir}")


if __name__ == "__main__":
    main()
