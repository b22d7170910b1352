"""Multi30K's text files, image lists and region features into ``Item``s.

Multi30K: ``{split}.{lang}`` text files (optionally ``.gz``, in DIR or DIR/raw), the image
list ``{split}_images.txt`` (or ``image_splits/{split}.txt``); line i of every file
describes image i. Region features: ``{image_stem}.npy`` ``[R, D]`` per image in a
directory, or one ``[N, R, D]`` array per split in image-list order (``DIR/{split}.npy``,
or a single ``.npy`` file when one split is converted).
"""
from __future__ import annotations

from pathlib import Path

from shards.errors import UserError

from pipeline.downstream.annotations import Item, clean_caption, read_lines, split_of


def _find(root: Path, names: list[str]) -> Path | None:
    for name in names:
        for base in (root, root / "raw"):
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def multi30k_items(root: Path, splits: list[str], langs: list[str]) -> list[Item]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Multi30K directory {root} does not exist; give the folder with train.en, train_images.txt, ...")
    items = []
    for split in splits:
        image_list = _find(root, [f"{split}_images.txt", f"image_splits/{split}.txt"])
        if image_list is None:
            raise UserError(f"no image list for split {split!r} in {root} ({split}_images.txt or image_splits/{split}.txt)")
        images = [line.strip() for line in read_lines(image_list)]
        while images and not images[-1]:
            images.pop()
        texts = {}
        for lang in langs:
            path = _find(root, [f"{split}.{lang}"])
            if path is None:
                continue
            lines = read_lines(path)
            if len(lines) != len(images):
                raise UserError(f"{path} has {len(lines)} lines but {image_list.name} lists {len(images)} images; "
                                f"line i of every file must describe image i")
            texts[lang] = lines
        if not texts:
            raise UserError(f"no caption files for split {split!r} in {root} (expected {split}.en, {split}.de, ...)")
        for i, name in enumerate(images):
            captions = {lang: [clean_caption(lines[i])] for lang, lines in texts.items() if clean_caption(lines[i])}
            parallel = [{lang: caps[0] for lang, caps in captions.items()}] if len(captions) > 1 else []
            items.append(Item(Path(name).stem, split_of(split), captions, parallel, group=split, index=i))
    return items
