"""Linear evaluation: augbench's fast linear protocol vs the 100-epoch SGD linear protocol, same encoder and data.

- fast (augbench.evaluate.protocols): features of train, val and test
  extracted once by the frozen encoder (`extract_features`), then
  multinomial logistic regression by L-BFGS with a weight-decay sweep chosen
  on val (`fit_linear_classifier`);
- SGD (the standard protocol, augbench.evaluate.training): 100 epochs of SGD
  on a linear head over the frozen encoder (eval mode) run on random resized
  crops and flips of every batch, a learning-rate sweep {0.01, 0.1, 1.0}
  trained side by side and chosen on val, cosine decay.

Both read the same Shapes World splits (32 px; `--task`, by default the hue
bin: the quickstart's encoders read hue well above chance but shape at about
chance, and two protocols agreeing at chance says nothing; the quick suite's
10,000 train and 1,000 val images, Shapes World's defaults, and 10,000 test
images, five times the quick suite's, see below) and the same frozen encoder:
`--encoder` (a run directory or .safetensors file), or by default a seeded
random-init quarter-width ResNet-18 (the quickstart's architecture) whose
BatchNorm statistics are set from the train images, which needs no
pretraining run.
Wall time of each protocol includes its feature extraction or encoder
passes. The SGD protocol's accuracy moves with its seed, the crops it draws
(41.95–43.55 % over four seeds on 4,000 training images), so `--sgd-seeds N`
runs it N times and compares the fast protocol with their mean.
Prints, last, the speed ratio (one SGD run's mean wall time / the fast
protocol's) and the accuracy difference fast − SGD (mean) in points, with its
standard error paired over the test images. On the quick suite's 2,000 test
images that error was about a point, twice the 0.5-point goal, hence 10,000
test images by default (0.44); test images are generated, so they cost only
their feature extraction, which both protocols' wall times include.
Usage: python benchmarks/linear_eval_speed.py [--task hue_bin] [--epochs 100] [--train 10000] [--test 10000]
    [--sgd-seeds 1] [--encoder runs/quickstart]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine

from augbench.augment.views import to_float
from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world
from augbench.evaluate.features import extract_features
from augbench.evaluate.protocols import LinearConfig, fit_linear_classifier
from augbench.evaluate.training import SGDLinearConfig, sgd_linear_classifier
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import load_encoder

TASKS = ("hue_bin", "shape", "orientation_bin")


@torch.no_grad()
def calibrate_batchnorm(encoder: torch.nn.Module, images: torch.Tensor) -> None:
    """BatchNorm running statistics of a random-init encoder set to the data's, so its features are not degenerate."""
    for module in encoder.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches
    encoder.train()
    for batch in images.split(512):
        encoder(to_float(batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=None, help="run directory or .safetensors (default: random init)")
    parser.add_argument("--task", choices=TASKS, default=TASKS[0], help="the Shapes World label to predict")
    parser.add_argument("--epochs", type=int, default=100)
    defaults = ShapesWorldConfig()
    parser.add_argument("--train", type=int, default=defaults.train_size)
    parser.add_argument("--val", type=int, default=defaults.val_size)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--sgd-seeds", type=int, default=1, help="SGD runs, seeds 0..N-1, compared by their mean")
    args = parser.parse_args()
    if args.sgd_seeds < 1:
        parser.error(f"--sgd-seeds {args.sgd_seeds}: must be at least 1")
    print(machine())
    if args.encoder:
        encoder, _ = load_encoder(args.encoder)
    else:
        torch.manual_seed(0)
        encoder = build_backbone(BackboneConfig(name="resnet18", cifar_stem=True, width=0.25))
    data = ShapesWorldConfig(image_size=32, train_size=args.train, val_size=args.val, test_size=args.test)
    splits = {split: load_shapes_world(data, split) for split in ("train", "val", "test")}
    if not args.encoder:
        calibrate_batchnorm(encoder, splits["train"].images)
    encoder.eval()
    images = {split: dataset.images for split, dataset in splits.items()}
    labels = {split: dataset.labels[args.task] for split, dataset in splits.items()}
    num_classes = int(labels["train"].max()) + 1

    start = time.perf_counter()
    features = {split: extract_features(encoder, images[split], device="cpu") for split in images}
    predict, chosen = fit_linear_classifier((features["train"], labels["train"]), (features["val"], labels["val"]),
                                            num_classes, LinearConfig())
    fast_correct = (predict(features["test"]) == labels["test"]).float()  # (N_test,) 1 where right
    fast_accuracy = fast_correct.mean().item() * 100
    fast_seconds = time.perf_counter() - start
    print(f"fast linear (cached features, L-BFGS, weight decay {chosen['weight_decay']}): "
          f"{fast_seconds:.1f} s, test top-1 {fast_accuracy:.2f} %", flush=True)

    sgd_run_seconds, sgd_correct = [], []
    for seed in range(args.sgd_seeds):
        start = time.perf_counter()
        head, chosen = sgd_linear_classifier(encoder, (splits["train"], labels["train"]),
                                             (splits["val"], labels["val"]), num_classes,
                                             SGDLinearConfig(epochs=args.epochs), seed=seed, device="cpu")
        with torch.no_grad():
            sgd_predictions = head(extract_features(encoder, images["test"], device="cpu")).argmax(1)
        sgd_correct.append((sgd_predictions == labels["test"]).float())
        sgd_run_seconds.append(time.perf_counter() - start)
        print(f"SGD linear (seed {seed}, {args.epochs} epochs, crops + flips, lr {chosen['lr']}): "
              f"{sgd_run_seconds[-1]:.1f} s, test top-1 {sgd_correct[-1].mean().item() * 100:.2f} %", flush=True)
    sgd_accuracies = [correct.mean().item() * 100 for correct in sgd_correct]
    sgd_seconds, sgd_accuracy = statistics.mean(sgd_run_seconds), statistics.mean(sgd_accuracies)
    # Paired over the test images: both protocols are right on most of the same images, so the difference's error
    # comes from the images where they disagree, not from each accuracy's binomial error.
    per_image = fast_correct - torch.stack(sgd_correct).mean(dim=0)  # (N_test,)
    standard_error = per_image.std().item() / len(per_image) ** 0.5 * 100
    print(f"{args.train} train / {args.val} val / {args.test} test images, {num_classes} classes ({args.task})")
    if args.sgd_seeds > 1:
        print(f"SGD linear over {args.sgd_seeds} seeds: mean {sgd_seconds:.1f} s, mean test top-1 {sgd_accuracy:.2f} % "
              f"(sd {statistics.stdev(sgd_accuracies):.2f})")
    print(f"ratio SGD / fast wall time: {sgd_seconds / fast_seconds:.1f}x, accuracy fast - SGD: "
          f"{fast_accuracy - sgd_accuracy:+.2f} points (paired standard error {standard_error:.2f})")


if __name__ == "__main__":
    main()
