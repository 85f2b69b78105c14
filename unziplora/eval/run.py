"""Generate an entry's probe images with the Studio and score them (the core of ``unzip eval``).

Images come from :class:`unziplora.generate.Studio` (no sampling of our own): ``content`` probes
use the content LoRA alone with the rendered prompt, ``style`` probes the style LoRA alone,
``recon`` and ``combined`` probes both LoRAs with the rendered prompt as the combined prompt and
the entry's own content and style prompts for the branches. The reference image is the entry's
``source.png`` (a 256 px thumbnail of the first training image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from unziplora.entry_files import SOURCE_IMAGE
from unziplora.eval.probes import Probe, probe_seed
from unziplora.generate.prompting import compose_prompts
from unziplora.prompts import PromptSet, style_phrase


@dataclass
class ProbeImage:
    kind: str
    prompt: str
    seed: int
    image: Any  # PIL image
    scores: dict[str, float] = field(default_factory=dict)  # this image's own scores (metrics.PER_KIND)


@dataclass
class Evaluation:
    entry_id: str
    scores: dict[str, float]
    images: list[ProbeImage] = field(default_factory=list)


def generate_probes(
    studio: Any,
    entry: Any,
    probes: Sequence[Probe],
    *,
    seed: int,
    num: int,
    options: Any,
    on_image: Callable[[], None] | None = None,
) -> list[ProbeImage]:
    from dataclasses import replace

    prompts = PromptSet.from_dict(
        entry.record["prompts"] | {"subject": entry.subject or None, "style_words": entry.style or None}
    )
    out: list[ProbeImage] = []
    for p_index, probe in enumerate(probes):
        # A combined probe is a context: its prompts are built as compose builds them, so CLIP-T reads
        # the combined prompt the base saw.
        text = (
            compose_prompts(entry, entry, probe.prompt).combined if probe.kind == "combined" else probe.render(prompts)
        )
        for i in range(num):
            s = probe_seed(seed, p_index, i)
            opts = replace(options, num=1, seed=s)
            if probe.kind == "content":
                made = studio.compose(entry, None, prompt=text, options=opts)
            elif probe.kind == "style":
                made = studio.compose(None, entry, prompt=text, options=opts)
            elif probe.kind == "combined":
                made = studio.compose(entry, entry, probe.prompt, options=opts)
            else:  # recon: the source prompts themselves
                made = studio.compose(
                    entry, entry, prompt=text, content_prompt=prompts.content, style_prompt=prompts.style, options=opts
                )
            out.append(ProbeImage(probe.kind, text, s, made[0].image))
            if on_image is not None:
                on_image()
    return out


def score_images(embedders: Any, entry: Any, images: Sequence[ProbeImage]) -> dict[str, float]:
    from PIL import Image

    from unziplora.eval.metrics import PER_KIND, KindEmbeddings, Reference, scores

    with Image.open(entry.file(SOURCE_IMAGE)) as src:
        source = src.convert("RGB")
    style_words = entry.style or ""
    subject = entry.subject or ""
    texts = embedders.clip_texts([style_phrase(style_words), f"a {subject}"])
    ref = Reference(
        clip=embedders.clip_images([source])[0],
        dino=embedders.dino_images([source])[0],
        style_text=texts[0],
        subject_text=texts[1],
    )
    kinds: dict[str, KindEmbeddings] = {}
    for kind in ("content", "style", "recon", "combined"):
        group = [im for im in images if im.kind == kind]
        if not group:
            continue
        pics = [im.image for im in group]
        kinds[kind] = KindEmbeddings(
            clip=embedders.clip_images(pics),
            dino=embedders.dino_images(pics),
            prompt_text=embedders.clip_texts([im.prompt for im in group]),
        )
        emb = kinds[kind]
        for i, im in enumerate(group):  # each image scored alone: the same definitions over one row
            one = KindEmbeddings(emb.clip[i : i + 1], emb.dino[i : i + 1], emb.prompt_text[i : i + 1])
            own = scores({kind: one}, ref)
            im.scores = {k: own[k] for k in dict.fromkeys((*PER_KIND[kind], "clip_t"))}
    return scores(kinds, ref)


def evaluate(
    studio: Any,
    entry: Any,
    embedders: Any,
    probes: Sequence[Probe],
    *,
    seed: int,
    num: int,
    options: Any,
    on_image: Callable[[], None] | None = None,
) -> Evaluation:
    images = generate_probes(studio, entry, probes, seed=seed, num=num, options=options, on_image=on_image)
    return Evaluation(entry.id, score_images(embedders, entry, images), images)
