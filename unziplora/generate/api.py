"""The one-call API the commands and notebooks use: ids in, images out.

:func:`generate` resolves entry ids in the registry, checks they can be combined (before loading
anything heavy), picks the base (the entries' own unless one is given), reuses the last loaded
:class:`~unziplora.generate.engine.Studio` when base, device and precision are unchanged, and
returns :class:`~unziplora.generate.engine.Generated` images. Writing them is
:func:`unziplora.generate.output.save_results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unziplora.base_model import BaseSpec, fingerprint, parse_base, same_base
from unziplora.errors import BaseModelError
from unziplora.generate.options import GenerationOptions

_cache: dict[str, Any] = {}


@dataclass
class Request:
    """A resolved generation call: the entries, the base to use, and notes for the user."""

    content: Any | None
    style: Any | None
    base: BaseSpec
    notes: list[str] = field(default_factory=list)


def resolve(
    content: str | Any | None = None,
    style: str | Any | None = None,
    *,
    base: str | None = None,
    registry: Any = None,
) -> Request:
    """Look up the entries (ids need ``registry``, a Registry) and choose the base; refuses unknown
    ids and mismatched bases."""
    from unziplora.generate.assemble import check_same_base
    from unziplora.generate.prompting import mode_for

    found = [_lookup(registry, x) for x in (content, style)]
    mode_for(*found)
    shared = check_same_base(*found)
    assert shared is not None
    notes: list[str] = []
    if base is not None:
        spec = parse_base(base)
        if not same_base(shared, {"ref": spec.ref, "fingerprint": fingerprint(spec)}):
            owner = next(e for e in found if e is not None)
            notes.append(f"{owner.id} was trained on {shared['ref']}; generating on {spec.ref} as asked")
    else:
        try:
            spec = parse_base(shared["ref"])
        except BaseModelError as exc:
            owner = next(e for e in found if e is not None)
            raise BaseModelError(
                f"the base of entry {owner.id} cannot be used: {str(exc).rstrip('.')}; pass --base MODEL"
            ) from None
    return Request(found[0], found[1], spec, notes)


def _lookup(registry: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if registry is None:
        raise ValueError(f"entry {value!r} given by id, but no registry to look it up in; pass registry=")
    return registry.get(value)


def open_studio(base: BaseSpec | str, *, device: str = "auto", precision: str = "auto") -> Any:
    """A :class:`Studio` for ``base``; the last one is kept and reused for the same arguments."""
    from unziplora.generate.engine import Studio

    spec = base if isinstance(base, BaseSpec) else parse_base(base)
    key = f"{spec.kind}:{spec.ref}|{device}|{precision}"
    studio = _cache.get(key)
    if studio is None:
        _cache.clear()  # one pipeline at a time: SDXL is large
        studio = Studio.load(spec, device=device, precision=precision)
        _cache[key] = studio
    return studio


def generate(
    content: str | Any | None = None,
    style: str | Any | None = None,
    context: str = "",
    *,
    subject: str | None = None,
    image: str | Path | Any | None = None,
    prompt: str | None = None,
    content_prompt: str | None = None,
    style_prompt: str | None = None,
    base: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    registry: str | Path | Any | None = None,
    options: GenerationOptions | None = None,
    on_step: Any = None,
    **option_fields: Any,
) -> list[Any]:
    """Compose (``content`` and/or ``style``) or restyle (``style`` with a new ``subject`` or ``image``).

    Example::

        from unziplora.generate import generate
        images = generate("cat-sketch-3f2a", "rose-popart-91c0", "on a beach", num=2, steps=30)
        images[0].image.save("beach.png")
    """
    from unziplora.registry import Registry

    reg = registry if isinstance(registry, Registry) else Registry.from_settings(registry)  # the notebook's door
    request = resolve(content, style, base=base, registry=reg)
    studio = open_studio(request.base, device=device, precision=precision)
    opts = GenerationOptions(**option_fields) if options is None else options
    if option_fields and options is not None:
        from dataclasses import replace

        opts = replace(options, **option_fields)
    if subject is not None or image is not None:
        if request.content is not None:
            from unziplora.errors import PromptError

            raise PromptError("restyling takes a style entry and a new subject; leave out the content entry")
        return studio.restyle(
            request.style, subject or "", context, prompt=prompt, image=image, options=opts, on_step=on_step
        )
    return studio.compose(
        request.content,
        request.style,
        context,
        prompt=prompt,
        content_prompt=content_prompt,
        style_prompt=style_prompt,
        options=opts,
        on_step=on_step,
    )
