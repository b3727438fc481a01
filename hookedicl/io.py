"""Atomic file writes: every artefact of a run goes through here.

A write goes to a temporary file in the destination directory, is flushed and fsynced, then
renamed over the destination, so a reader (or a resumed run after a crash) never sees a partial
file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _file_mode() -> int:
    """Permission bits of a new file under the current umask (mkstemp itself uses 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """`with atomic_open(p, "w") as fh: ...` writes `p` atomically (or not at all on error)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Atomic write for libraries that insist on a file name (`write(tmp_name)`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def save_safetensors(path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; returns its sha256.

    The header is rewritten with sorted keys (safetensors itself orders the metadata at random),
    so the same tensors and metadata always give the same bytes and the same sha256."""
    from safetensors.torch import save

    data = canonical_safetensors(save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def canonical_safetensors(data: bytes) -> bytes:
    """`data` (a safetensors file) with its JSON header in sorted key order, space-padded to a
    multiple of 8 bytes; the tensor bytes are unchanged (their offsets are relative to them)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """Parsed JSON of `path`; ValueError naming the file when it is not valid UTF-8 JSON."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it was corrupted or edited by hand") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- strict YAML
MAX_YAML_BYTES = 1 << 20
"""Largest YAML document `load_yaml` reads (1 MiB)."""
MAX_YAML_ALIASES = 100
"""Most alias references (`*name`) in one document."""
MAX_YAML_NODES = 100_000
"""Most nodes of a document with every alias expanded (what a consumer would walk)."""


def _strict_loader() -> type:
    import re

    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 core scalars (no `yes`/`on` booleans, no `1:30` sexagesimal
        or `0755` octal integers), duplicate keys refused and aliases bounded."""

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.AliasEvent):
                self.n_aliases = getattr(self, "n_aliases", 0) + 1
                if self.n_aliases > MAX_YAML_ALIASES:
                    raise yaml.composer.ComposerError(
                        None, None, f"more than {MAX_YAML_ALIASES} aliases (*name)", self.peek_event().start_mark
                    )
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"unhashable mapping key {key!r}", key_node.start_mark
                    ) from None
                if dup:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    core = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    StrictLoader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag not in core] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."),
    )

    def _int(loader, node):  # type: ignore[no-untyped-def]
        text = loader.construct_scalar(node)
        if not re.fullmatch(r"[-+]?[0-9]+", text):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a decimal integer", node.start_mark)
        return int(text)

    def _float(loader, node):  # type: ignore[no-untyped-def]
        text = loader.construct_scalar(node).lower()
        if text.lstrip("+-") == ".inf":
            return float("-inf") if text.startswith("-") else float("inf")
        if text == ".nan":
            return float("nan")
        try:
            return float(text)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a number", node.start_mark) from None

    StrictLoader.add_constructor("tag:yaml.org,2002:int", _int)
    StrictLoader.add_constructor("tag:yaml.org,2002:float", _float)
    return StrictLoader


_STRICT_LOADER: type | None = None


def _expanded_size(root: Any) -> int:
    """Nodes of a composed YAML tree with every alias expanded; ValueError for a recursive alias
    or more than MAX_YAML_NODES (iterative: deep documents cannot overflow the stack)."""
    import yaml

    size: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        if done:
            active.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] > MAX_YAML_NODES:
                raise ValueError(f"the document expands to more than {MAX_YAML_NODES} nodes (aliases)")
            continue
        if id(node) in size:
            continue
        if id(node) in active:
            raise ValueError("a recursive alias (a node containing itself)")
        active.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    return size[id(root)]


def load_yaml(text: str | bytes, source: str = "<yaml>") -> Any:
    """Parse one YAML document strictly and within bounds (see `_strict_loader`).

    Refuses documents over MAX_YAML_BYTES, with more than MAX_YAML_ALIASES aliases or
    MAX_YAML_NODES nodes once expanded, duplicate keys, non-YAML-1.2 scalars and unsafe tags;
    every refusal and syntax error is a ValueError starting with `source`."""
    import yaml

    global _STRICT_LOADER
    if isinstance(text, bytes):
        if len(text) > MAX_YAML_BYTES:
            raise ValueError(f"{source}: {len(text)} bytes, more than the {MAX_YAML_BYTES} a YAML config may have")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{source}: not UTF-8 text ({e})") from None
    if len(text.encode("utf-8", errors="replace")) > MAX_YAML_BYTES:
        raise ValueError(f"{source}: more than the {MAX_YAML_BYTES} bytes a YAML config may have")
    if _STRICT_LOADER is None:
        _STRICT_LOADER = _strict_loader()
    loader = _STRICT_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ValueError(f"{source}: invalid YAML: nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """`load_yaml` of a file, reading at most MAX_YAML_BYTES + 1 bytes of it."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{p}: cannot read ({e.strerror})") from None
    return load_yaml(data, str(p))
