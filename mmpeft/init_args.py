"""``init_args`` taken from the constructor call itself, so a saved config can rebuild the object.

Towers and projectors are saved in ``mmpeft_config.json`` as ``class_path`` + ``init_args``. Instead of each class
re-listing its arguments by hand (and drifting from its signature), its ``__init__`` is decorated::

    @records_init_args(name=absolute_if_local)
    def __init__(self, name: str, dtype: str = "float32"): ...

The call is bound to the signature with defaults applied; each named normaliser is applied to its argument (the
constructor then runs with the normalised value, so what is saved is what was used); every argument except
``self`` and ``exclude`` becomes ``self.init_args``, in signature order. Within a chain of decorated ``__init__``s
(``super().__init__(...)``) the outermost call records: ``init_args`` are the arguments of the class that was
built. A subclass whose own ``__init__`` is not decorated records its parent's arguments only: decorate it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

Init = TypeVar("Init", bound=Callable[..., None])


def records_init_args(*, exclude: tuple[str, ...] = (), **normalize: Callable[[Any], Any]) -> Callable[[Init], Init]:
    """Decorate an ``__init__`` so it sets ``self.init_args`` from its call (see the module docstring).

    Args:
        exclude: arguments not recorded (a projector's two widths, which the model supplies).
        normalize: ``argument name -> function`` applied to that argument before the constructor sees it.
    """

    def decorate(init: Init) -> Init:
        signature = inspect.signature(init)
        unknown = sorted((set(normalize) | set(exclude)) - set(signature.parameters))
        if unknown:
            raise TypeError(f"records_init_args names {unknown}, which {init.__qualname__} does not take")
        variadic = [p.name for p in signature.parameters.values()
                    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if variadic:
            raise TypeError(f"{init.__qualname__} takes *{variadic[0]}: its arguments cannot be saved by name")

        @functools.wraps(init)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            for name, function in normalize.items():
                bound.arguments[name] = function(bound.arguments[name])
            if "init_args" not in vars(self):  # the outermost decorated __init__ of a super() chain records
                self.init_args = {k: v for k, v in list(bound.arguments.items())[1:] if k not in exclude}
            init(*bound.args, **bound.kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
