"""Train the small image classifier whose features the image-sample metrics use, and write it.

Plain cross-entropy, no augmentation, AdamW with a linear warmup and cosine decay, on the
train split of the data set exactly as ``scoregen.data`` cuts it; the held-out split is only
evaluated (its accuracy goes into the file's record, nothing is tuned on it). Inputs are
pixels in [0, 1] (data space). For digits the result is the shipped
``scoregen/builtin_data/digits-classifier.safetensors``; MNIST / Fashion-MNIST read the
idx files from a local folder (``--data-dir``, torchvision layout) and write
``out/classifier-NAME.safetensors`` unless ``--out`` says otherwise::

    python -m experiments.train_classifier [--data digits] [--epochs 30] [--out PATH]
    python -m experiments.train_classifier --data mnist --data-dir ~/data --epochs 5
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from scoregen.data import load_dataset
from scoregen.models import count_parameters
from scoregen.models.classifier import (
    BUILTIN_CLASSIFIERS,
    ClassifierConfig,
    ImageClassifier,
    classifier_accuracy,
    save_classifier,
)

ROOT = Path(__file__).resolve().parent.parent
DATA_CHOICES = ("digits", "mnist", "fashion_mnist")
# per data set: the architecture and the default number of epochs
RECIPES: dict[str, dict] = {
    "digits": {"channels": (32, 64), "feature_dim": 64, "epochs": 30},
    "mnist": {"channels": (32, 64, 128), "feature_dim": 64, "epochs": 8},
    "fashion_mnist": {"channels": (32, 64, 128), "feature_dim": 64, "epochs": 12},
}


def default_out(data: str) -> Path:
    if data in BUILTIN_CLASSIFIERS:
        return ROOT / "scoregen" / "builtin_data" / BUILTIN_CLASSIFIERS[data]
    return Path("out") / f"classifier-{data}.safetensors"


def load_pixels(data: str, data_dir: str | None) -> tuple:
    """``(dataset, train pixels, train labels, test pixels, test labels)``, pixels in [0, 1]."""
    options = {} if data == "digits" else {"data_dir": data_dir}
    dataset = load_dataset(data, **options)
    train = dataset.to_data_space(dataset.train, clip=True)
    test = dataset.to_data_space(dataset.test, clip=True)
    return dataset, train, dataset.train_labels, test, dataset.test_labels


def fit(
    classifier: ImageClassifier,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    warmup: int = 50,
    seed: int = 0,
    log=None,
) -> dict:
    """Minimise the mean cross-entropy over ``epochs`` shuffled passes; returns a summary."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(images.shape[0] / batch_size)
    total = epochs * per_epoch
    step = 0
    classifier.train()
    for epoch in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        running = 0.0
        for index in order.split(batch_size):
            step += 1
            # linear warmup, then cosine decay to 0
            scale = (
                step / warmup
                if step <= warmup
                else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            )
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
            loss = F.cross_entropy(classifier(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * index.shape[0]
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {running / images.shape[0]:.4f}")
    classifier.eval()
    return {"steps": total, "final_epoch_loss": running / images.shape[0]}


def train_classifier(
    data: str = "digits",
    *,
    data_dir: str | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    out: Path | None = None,
    command: str | None = None,
    log=print,
) -> tuple[ImageClassifier, dict]:
    """Train on ``data``'s train split, measure the held-out accuracy, write the file (unless
    ``out`` is False-y and ``data`` has no default, see :func:`default_out`)."""
    if data not in DATA_CHOICES:
        raise ValueError(f"data must be one of {DATA_CHOICES}, got {data!r}")
    recipe = RECIPES[data]
    epochs = recipe["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    dataset, train, train_labels, test, test_labels = load_pixels(data, data_dir)
    torch.manual_seed(seed)  # the initial weights
    config = ClassifierConfig(
        shape=tuple(dataset.shape),
        channels=recipe["channels"],
        feature_dim=recipe["feature_dim"],
        n_classes=int(train_labels.max()) + 1,
    )
    classifier = ImageClassifier(config)
    start = time.perf_counter()
    summary = fit(
        classifier, train, train_labels, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed, log=log,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    feature_scale = classifier.calibrate(train)
    record = {
        "data": {
            "name": data,
            "shape": list(dataset.shape),
            "input": "pixels in [0, 1] (data space), [B, C, H, W]",
            "n_train": int(train.shape[0]),
            "n_test": int(test.shape[0]),
            "split_seed": dataset.info.get("seed"),
        },
        "held_out_accuracy": classifier_accuracy(classifier, test, test_labels),
        "train_accuracy": classifier_accuracy(classifier, train, train_labels),
        "n_parameters": count_parameters(classifier),
        "feature_scale": feature_scale,
        "training": {
            "command": command or "python -m experiments.train_classifier",
            "loss": "cross-entropy, no augmentation",
            "optimizer": "AdamW, linear warmup 50 steps then cosine decay to 0",
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "wall_time_s": round(seconds, 1),
            **summary,
        },
    }
    if out:
        save_classifier(out, classifier, **record)
        record["path"] = str(out)
    return classifier, record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=DATA_CHOICES, default="digits")
    parser.add_argument("--data-dir", help="folder holding MNIST/ or FashionMNIST/ (idx files)")
    parser.add_argument(
        "--epochs", type=int, help="passes over the train split (default: per data)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output file (default: see the description)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.data != "digits" and args.data_dir is None:
        parser.error(f"--data {args.data} needs --data-dir (the folder with its idx files)")
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "-m", "experiments.train_classifier", *(argv or sys.argv[1:])])
    _, record = train_classifier(
        args.data, data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, out=args.out or default_out(args.data), command=command,
    )  # fmt: skip
    print(
        f"{args.data}: held-out accuracy {record['held_out_accuracy']:.4f} on "
        f"{record['data']['n_test']} images (train {record['train_accuracy']:.4f}), "
        f"{record['n_parameters']} parameters, {record['training']['wall_time_s']:.0f} s; "
        f"wrote {record['path']}"
    )
    return record


if __name__ == "__main__":
    main()
