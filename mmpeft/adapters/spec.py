"""What to train in one tower: ``AdapterSpec``.

One spec per tower (vision, LLM). The method decides the mechanism; ``targets`` decides where. Targets default to
what fits the tower family (each tower's ``default_adapter_targets()``), so ``AdapterSpec(method="lora")`` is a
sensible choice for any tower.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Method = Literal["frozen", "lora", "dora", "ia3", "loha", "lokr", "full"]
PEFT_METHODS = ("lora", "dora", "ia3", "loha", "lokr")
MAX_FILE_RANK = 16384  # ranks and patterns read from a saved file are bounded (``AdapterSpec.from_dict``)
MAX_FILE_PATTERN = 1000
_NESTED_QUANTIFIER = re.compile(r"\([^()]*[*+}][^()]*\)\s*[*+{]")  # a group with a quantifier, itself quantified


@dataclass
class AdapterSpec:
    """How one tower is trained.

    Attributes:
        method: ``frozen`` (nothing trains), ``full`` (every parameter trains), or a peft method: ``lora``,
            ``dora`` (LoRA with weight decomposition), ``ia3``, ``loha``, ``lokr``.
        r: adapter rank (lora, dora, loha, lokr).
        alpha: scaling numerator; the update is scaled by ``alpha / r`` (lora, dora, loha, lokr).
        dropout: dropout on the adapter input (lora, dora); rank dropout for loha / lokr; unused by ia3.
        targets: regex searched (``re.search``) in each module's full name,
            e.g. ``r"layers\\.(2[0-9])\\..*(q|v)_proj$"``.
            Only modules peft can adapt (Linear, Conv, ...) are kept. ``None``: the tower's family default.
        ia3_feedforward: for ia3, regex of the targets whose *input* is scaled (peft's ``feedforward_modules``);
            the rest get their output scaled.
        init_weights: peft's default initialisation (True: LoRA ``B = 0`` so the adapted model starts equal to the
            base). False gives random non-zero adapters, for tests and ablations.
    """

    method: Method = "frozen"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str | None = None
    ia3_feedforward: str = r"(down_proj|fc2|dense_4h_to_h|w2|mlp\.c_proj)$"
    init_weights: bool = True

    def __post_init__(self) -> None:
        valid = ("frozen", "full", *PEFT_METHODS)
        if self.method not in valid:
            raise ValueError(f"AdapterSpec.method={self.method!r} is not one of {valid}")
        if self.method in PEFT_METHODS and self.method != "ia3" and self.r < 1:
            raise ValueError(f"AdapterSpec.r must be >= 1 for {self.method}, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AdapterSpec.dropout must be in [0, 1), got {self.dropout}")

    @property
    def uses_peft(self) -> bool:
        return self.method in PEFT_METHODS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "AdapterSpec") -> AdapterSpec:
        """Build from saved data (``to_dict`` output), accepting only this class's own fields and methods.

        Raises:
            ValueError naming ``where`` (e.g. ``mmpeft_config.json: key vlm.llm_adapter``) and the bad field.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object of AdapterSpec fields, got {data!r}")
        types = {"method": str, "r": int, "alpha": (int, float), "dropout": (int, float), "targets": (str, type(None)),
                 "ia3_feedforward": str, "init_weights": bool}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{where} has unknown fields {unknown}; AdapterSpec fields are {known}")
        for name, value in data.items():
            if not isinstance(value, types[name]) or (types[name] is int and isinstance(value, bool)):
                raise ValueError(f"{where}.{name} = {value!r} has the wrong type")
        # A file is data: bound what it can make loading do (allocate, or backtrack a regex over every module name)
        if not 0 <= data.get("r", 8) <= MAX_FILE_RANK:
            raise ValueError(f"{where}.r = {data['r']} is outside [0, {MAX_FILE_RANK}]; build such a spec in Python")
        for name in ("targets", "ia3_feedforward"):
            pattern = data.get(name)
            if pattern is None:
                continue
            if len(pattern) > MAX_FILE_PATTERN or _NESTED_QUANTIFIER.search(pattern):
                raise ValueError(f"{where}.{name} = {pattern[:80]!r}: a pattern from a file must be at most "
                                 f"{MAX_FILE_PATTERN} characters with no quantified group that holds a quantifier "
                                 "(such as '(a+)+', which can backtrack for ever); build such a spec in Python")
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{where}.{name} = {pattern!r} is not a regular expression ({e})") from None
        try:
            return cls(**data)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
