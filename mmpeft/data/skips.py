"""Skip accounting: bad samples are skipped and counted by reason (or, in strict mode, stop the run).

Nothing is dropped silently: every skip is counted under a reason tag, the first few messages (naming the shard or
source file and key) are kept, and ``report()`` is printed at the end of a conversion or an epoch.
"""

from __future__ import annotations

import logging
from collections import Counter

from mmpeft.data.schema import SampleError

log = logging.getLogger(__name__)


class SkipLog:
    """Counts skipped samples per reason.

    Args:
        strict: raise the first ``SampleError`` instead of counting it.
        examples: how many messages to keep per reason.
    """

    def __init__(self, strict: bool = False, examples: int = 3):
        self.strict = strict
        self.examples = examples
        self.counts: Counter[str] = Counter()
        self.messages: dict[str, list[str]] = {}

    def skip(self, error: SampleError) -> None:
        if self.strict:
            raise error
        self.counts[error.reason] += 1
        kept = self.messages.setdefault(error.reason, [])
        if len(kept) < self.examples:
            kept.append(str(error))
        if self.counts[error.reason] == 1:
            log.warning("skipping sample (%s): %s", error.reason, error)

    def merge(self, counts: dict[str, int]) -> None:
        """Add counts gathered elsewhere (another worker, a resumed shard)."""
        self.counts.update(counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, what: str = "samples") -> str:
        if not self.counts:
            return f"skipped {what}: none"
        lines = [f"skipped {what}: {self.total} ({', '.join(f'{k}: {v}' for k, v in sorted(self.counts.items()))})"]
        for reason, msgs in sorted(self.messages.items()):
            lines += [f"  e.g. [{reason}] {m}" for m in msgs]
        return "\n".join(lines)
