"""One error for every bad file of every split (#19: two bad files used to take two runs to find)."""

from __future__ import annotations

from typing import List, Sequence

from ..datasets.validation import DatasetValidationError

__all__ = ["merge_validation_errors"]


def merge_validation_errors(errors: Sequence[DatasetValidationError], limit: int = 20) -> DatasetValidationError:
    """A :class:`DatasetValidationError` listing the problems of all ``errors`` (each file once, ``limit`` shown,
    all counted)."""
    problems, lines, seen = [], [], set()
    for err in errors:
        for index, source, message in err.problems:
            if source in seen:
                continue
            seen.add(source)
            problems.append((index, source, message))
            lines.append(message)
    shown: List[str] = lines[:limit]
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return DatasetValidationError(
        f"{len(lines)} files failed the check before training:\n  " + "\n  ".join(shown) + more
        + "\nFix or remove these files (or drop them from the split list) and start again.",
        problems,
    )
