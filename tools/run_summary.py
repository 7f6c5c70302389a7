"""The README's paragraph on the published run, rewritten from the committed records (`make records`).

`pipeline.run_summary` computes it from `results/<profile>/runs/*/metrics.json` alone, so every clone gives
the same text; this writes it between the README's `<!-- run-summary:<profile> -->` markers. `--check`
exits 1, naming the command, when the README's paragraph is not what the records say
(tests/test_pipeline.py runs the same check).
"""

from __future__ import annotations

import argparse
import sys

from widedeep import pipeline, profiles

README = profiles.repo_root() / "README.md"


def markers(profile: str) -> tuple[str, str]:
    """The comment lines that enclose a profile's paragraph in the README."""
    return f"<!-- run-summary:{profile} -->", f"<!-- /run-summary:{profile} -->"


def with_summary(text: str, profile: str, summary: str) -> str:
    """`text` with the paragraph between `profile`'s markers replaced by `summary`."""
    start, end = markers(profile)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the README needs exactly one '{start}' line followed by one '{end}' line "
                         f"to hold the {profile} run's summary")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{summary}\n{end}{tail}"


def readme_now(profile: str) -> tuple[str, str]:
    """The README as it is, and as the profile's committed records say it should be."""
    text = README.read_text()
    return text, with_summary(text, profile, pipeline.run_summary(profiles.load_profile(profile)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--check", action="store_true", help="only say whether the README is up to date")
    args = parser.parse_args()
    if markers(args.profile)[0] not in README.read_text():
        print(f"README.md keeps no run summary for profile {args.profile}; nothing to write")
        return
    text, updated = readme_now(args.profile)
    if args.check:
        if updated != text:
            sys.exit(f"README.md's {args.profile} run summary is not what the records say: run `make records` "
                     f"(or `python tools/run_summary.py --profile {args.profile}`)")
        return
    README.write_text(updated)
    print(f"README.md's {args.profile} run summary {'rewritten' if updated != text else 'already up to date'}")


if __name__ == "__main__":
    main()
