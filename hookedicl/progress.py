"""Progress bars: the one place that decides whether a bar is shown and which kind.

    from hookedicl.progress import progress_bar
    for item in progress_bar(items, desc="match", enabled=progress):
        ...
    with progress_bar(total=n_steps, desc="sae") as bar:
        bar.update(1)

Whether a bar is shown, in this order:

1. ``HOOKEDICL_PROGRESS=0`` in the environment: never (``hookedicl publish`` sets it for the
   notebook kernel, so published outputs hold no bars; ``hookedicl --quiet`` sets it too).
2. ``enabled=True`` / ``False`` passed by the caller (a ``progress=`` argument, ``log.progress``).
3. ``HOOKEDICL_PROGRESS=1``: always.
4. Otherwise: when stderr is a terminal, or inside a Jupyter kernel.

In a Jupyter kernel the bar is a widget when ``ipywidgets`` is installed (the ``notebooks``
extra) and plain text otherwise, never tqdm's "IProgress not found" warning. Outside a terminal
(a log file) a shown bar refreshes at most every 10 s.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

ENV = "HOOKEDICL_PROGRESS"


def silence() -> Callable[[], None]:
    """Turn every bar off (``HOOKEDICL_PROGRESS=0``) for this process and the processes it starts,
    e.g. sweep workers (``hookedicl --quiet``); returns a function that restores the previous
    setting."""
    before = os.environ.get(ENV)
    os.environ[ENV] = "0"

    def restore() -> None:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before

    return restore


def _in_kernel() -> bool:
    """True inside a Jupyter (ipykernel) kernel."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipykernel depends on IPython
        return False
    return type(get_ipython()).__name__ == "ZMQInteractiveShell"


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar is shown (the rules in the module docstring)."""
    env = os.environ.get(ENV, "").strip()
    if env not in ("", "0", "1"):
        raise ValueError(f"${ENV} must be 0 or 1, got {env!r}")
    if env == "0":
        return False
    if enabled is not None:
        return bool(enabled)
    if env == "1":
        return True
    return _stderr_is_tty() or _in_kernel()


def _bar_class() -> type:
    if _in_kernel() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm
    from tqdm.std import tqdm as text_tqdm

    return text_tqdm


def quiet_missing_widgets() -> None:
    """In a Jupyter kernel without ``ipywidgets``, load ``tqdm.autonotebook`` now with its
    "IProgress not found" warning silenced: libraries that use ``tqdm.auto`` (huggingface_hub,
    which TransformerLens imports) then fall back to plain text bars without printing the warning
    into the notebook. Called by ``import hookedicl``; does nothing elsewhere."""
    if "ipykernel.zmqshell" not in sys.modules or "tqdm.autonotebook" in sys.modules:
        return
    if importlib.util.find_spec("ipywidgets") is not None:
        return
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import tqdm.autonotebook  # noqa: F401


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | float | None = None,
    desc: str | None = None,
    enabled: bool | None = None,
    leave: bool | None = None,
    unit: str = "it",
    **kwargs: Any,
) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one of ``total`` steps), disabled unless
    :func:`progress_enabled` says otherwise; a disabled bar costs nothing and prints nothing.

    ``leave`` defaults to True for a top-level bar and False for a nested one (a bar opened while
    another is open), so inner bars vanish when done. Other keyword arguments go to tqdm.
    """
    cls = _bar_class()
    show = progress_enabled(enabled)
    if leave is None:
        leave = not any(not getattr(b, "disable", True) for b in list(getattr(cls, "_instances", ())))
    tty = _stderr_is_tty()
    kwargs.setdefault("mininterval", 0.2 if tty or _in_kernel() else 10.0)
    if cls.__module__ != "tqdm.notebook":
        kwargs.setdefault("dynamic_ncols", True)
    return cls(iterable, total=total, desc=desc, disable=not show, leave=leave, unit=unit, **kwargs)
