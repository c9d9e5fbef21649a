"""Transfer fidelity: leave each reference out of its bank and predict its scores from the others; and, for a file of
given matches, how evenly they use the bank and how often this toolkit's encoder picks the same reference."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from saqt.core.context import DEFAULT_CONTEXT, RunContext
from saqt.core.errors import ConfigError
from saqt.core.safe_files import write_bytes_atomic
from saqt.label.faiss_index import build_index, search
from saqt.label.stage_configs import FidelityConfig
from saqt.label.transfer import Rule, neighbour_weights, transfer


def correlations(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """SROCC and PLCC over the cells where both are finite; NaN for fewer than 3 of them."""
    ok = np.isfinite(truth) & np.isfinite(pred)
    if ok.sum() < 3:
        return float("nan"), float("nan")
    return float(spearmanr(truth[ok], pred[ok])[0]), float(pearsonr(truth[ok], pred[ok])[0])


@dataclass
class FidelityReport:
    """Pooled SROCC/PLCC of each predictor against the true scores, overall and per distortion type."""

    rows: dict[str, dict]  # predictor -> {"srocc", "plcc", "per_type": {type: srocc}}
    references: int

    def as_dict(self) -> dict:
        return {"references": self.references, "predictors": self.rows}


def evaluate_scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    """SROCC and PLCC of ``pred`` against ``truth`` (images x types) overall, and SROCC per distortion type."""
    srocc, plcc = correlations(truth.ravel(), pred.ravel())
    per_type = {t + 1: correlations(truth[:, t].ravel(), pred[:, t].ravel())[0] for t in range(truth.shape[1])}
    return {"srocc": srocc, "plcc": plcc, "per_type": per_type}


def leave_one_out(
    scores: np.ndarray, embeddings: np.ndarray | None, rule: Rule, seed: int = 0, random_draws: int = 20
) -> FidelityReport:
    """Each reference's scores predicted from the other references.

    ``rule`` needs ``embeddings`` (R, d) unless it is ``mean``. Baselines: ``mean`` (the others' mean per
    cell), ``random`` (one random other reference, averaged over ``random_draws`` draws), and ``oracle``
    (the single other reference that best matches, chosen by looking at the answer: a ceiling, per-reference
    SROCC averaged).
    """
    r = len(scores)
    if r < 2:
        raise ConfigError("leave-one-out needs at least two references")
    rows: dict[str, dict] = {}
    totals = np.nansum(scores, axis=0)
    counts = np.isfinite(scores).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = (totals[None] - np.nan_to_num(scores)) / (counts[None] - np.isfinite(scores))
    if rule.name != "mean":
        if embeddings is None:
            raise ConfigError(f"rule {rule.name} needs the bank's reference images to embed")
        neighbours = min(rule.neighbours, r - 1)
        sims, ids = search(build_index(embeddings), embeddings, neighbours + 1)
        own = ids == np.arange(r)[:, None]  # drop each reference from its own neighbours
        keep = ~own & (np.cumsum(~own, axis=1) <= neighbours)
        ids, sims = ids[keep].reshape(r, neighbours), sims[keep].reshape(r, neighbours)
        rows[rule.name] = evaluate_scores(scores, transfer(ids, neighbour_weights(sims, rule), scores))
    rows["mean"] = evaluate_scores(scores, mean_pred)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(random_draws):
        pick = (np.arange(r) + rng.integers(1, r, size=r)) % r  # a uniformly random other reference
        draws.append(evaluate_scores(scores, scores[pick]))
    rows["random"] = {key: float(np.nanmean([d[key] for d in draws])) for key in ("srocc", "plcc")}
    rows["random"]["per_type"] = {t: float(np.nanmean([d["per_type"][t] for d in draws])) for t in draws[0]["per_type"]}
    flat = scores.reshape(r, -1)
    best = [max(correlations(flat[i], flat[j])[0] for j in range(r) if j != i) for i in range(r)]
    rows["oracle"] = {"srocc": float(np.nanmean(best)), "plcc": float("nan"), "per_type": {}}
    return FidelityReport(rows, r)


def matches_usage(references: list[str], bank_size: int | None = None) -> dict:
    """How unevenly a list of matched references (one per image) uses the bank.

    ``effective_references`` is exp(entropy) of the usage shares: the bank size if every reference labelled
    as many images, 1 if one labelled them all.
    """
    counts = Counter(references)
    ranked = counts.most_common()
    shares = np.array([n for _, n in ranked], dtype=np.float64) / len(references)
    total = max(bank_size or 0, len(counts))
    return {
        "images": len(references),
        "references_used": len(counts),
        "bank_references": bank_size,
        "unused_references": total - len(counts),
        "most_used": list(ranked[0]),
        "least_used": list(ranked[-1]),
        "top5_share": float(shares[:5].sum()),
        "effective_references": float(np.exp(-(shares * np.log(shares)).sum())),
        "counts": dict(sorted(counts.items())),
    }


def top1_agreement(given: dict[str, str], own: dict[str, str]) -> dict:
    """How often the given top-1 reference of an image (name -> reference) is this toolkit's own top-1, over the
    images that have both; references are compared without extension (``I27.png`` is ``I27``)."""
    names = sorted(set(given) & set(own))
    same = sum(Path(given[n]).stem == Path(own[n]).stem for n in names)
    return {"compared": len(names), "agree": same, "rate": same / len(names) if names else float("nan")}


def score_matches(
    matches, bank=None, images: Path | None = None, encoder: str | None = None, device: str = "auto"
) -> dict:
    """The usage skew of ``matches`` (a :class:`saqt.label.given_matches.Matches`) and, given the ``images`` folder of the
    matched pristine images and a ``bank`` with reference images, their top-1 agreement with ``encoder``."""
    from saqt.build.sources import list_source
    from saqt.label.embed import embed_images
    from saqt.label.encoders import load_encoder

    references = [ref for ref, _ in matches.pairs.values()]
    report = {
        **matches.describe(),
        "usage": matches_usage(references, len(bank.ref_ids) if bank else None),
        "agreement": None,
    }
    if images is None:
        return report
    if bank is None or not bank.has_images:
        raise ConfigError("top-1 agreement needs --bank with its reference images, to embed them")
    listing = list_source("folder", images, selection=list(matches.pairs))
    if not listing.items:
        raise ConfigError(f"none of the {len(matches.pairs):,} matched images is under {images}")
    enc = load_encoder(encoder, device)
    refs = embed_images(enc, [str(p) for p in bank.images], desc="embed bank")
    vectors = embed_images(enc, [it.path for it in listing.items], desc="embed images")
    sims, nn = search(build_index(refs), vectors, 1)
    own = {Path(it.key).name: bank.ref_ids[nn[i, 0]] for i, it in enumerate(listing.items)}
    given = {name: ref for name, (ref, _) in matches.pairs.items()}
    report["agreement"] = {
        **top1_agreement(given, own),
        "missing_images": len(listing.errors),
        "encoder": enc.id,
        "weights": enc.weights,
        "own_top1": own,
    }
    return report


def run_fidelity(config: FidelityConfig, out: Path | None = None, ctx: RunContext = DEFAULT_CONTEXT) -> list[str]:
    """The lines that report the figures; with ``out``, the figures also go to that JSON file (``saqt fidelity
    --json``). Embedding runs in this process (``ctx`` is taken for the stages' common shape)."""
    figures, lines = _fidelity_of_matches(config) if config.matches is not None else _leave_one_out(config)
    if out:
        write_bytes_atomic(out, json.dumps(figures, indent=2).encode())
    return lines


def _leave_one_out(config: FidelityConfig) -> tuple[dict, list[str]]:
    """The leave-one-reference-out figures of the bank, and the lines that report them."""
    from saqt.label.embed import embed_images
    from saqt.label.encoders import load_encoder
    from saqt.label.reference_bank import BankError, load_bank, normalise_scores

    if config.bank is None:
        raise BankError("give --bank (or --matches to score a matches file)")
    labelled = load_bank(config.bank, config.bank_type)
    embeddings = None
    rule = config.transfer_rule
    if rule.name != "mean":
        if not labelled.has_images:
            raise BankError(
                f"rule {rule.name} needs the reference images, and {config.bank} has only the "
                "label table; use --rule mean for the baselines alone"
            )
        encoder = load_encoder(config.encoder, config.device)
        embeddings = embed_images(encoder, [str(p) for p in labelled.images])
    report = leave_one_out(normalise_scores(labelled.scores, config.normalise), embeddings, rule, config.seed)
    figures = {
        "bank": str(config.bank),
        "encoder": config.encoder,
        **rule.describe(),
        "normalise": config.normalise,
        **report.as_dict(),
    }
    kind = "proxy scores" if labelled.proxy else "human scores"
    lines = [f"leave-one-reference-out on {report.references} references of {config.bank} ({kind}):"]
    return figures, lines + _leave_one_out_lines(report, config)


def _leave_one_out_lines(report: FidelityReport, config: FidelityConfig) -> list[str]:
    """Each predictor's SROCC (and PLCC), then per type."""
    from saqt.build.distortions import catalogue

    rule = config.transfer_rule.name
    names = {
        rule: f"{rule} ({config.encoder}, k={config.transfer_rule.neighbours})",
        "mean": "mean baseline (content-agnostic)",
        "random": "random other reference",
        "oracle": "oracle: best other reference (ceiling)",
    }
    lines = []
    for key, row in report.rows.items():
        plcc = "" if np.isnan(row["plcc"]) else f"  PLCC {row['plcc']:.3f}"
        lines.append(f"  {names[key]:<55} SROCC {row['srocc']:.3f}{plcc}")
    shown = [key for key in report.rows if report.rows[key]["per_type"]]
    lines.append("  per type SROCC:  " + "  ".join(f"{key:>7}" for key in shown))
    for t in range(1, 26):
        cells = "  ".join(f"{report.rows[key]['per_type'][t]:7.3f}" for key in shown)
        lines.append(f"    {t:2d} {catalogue()[t - 1].name:<28} {cells}")
    return lines


def _fidelity_of_matches(config: FidelityConfig) -> tuple[dict, list[str]]:
    """``saqt fidelity --matches``: usage skew, and top-1 agreement where the images are at hand."""
    from saqt.label.given_matches import read_matches
    from saqt.label.reference_bank import load_bank

    bank = load_bank(config.bank, config.bank_type) if config.bank else None
    report = score_matches(read_matches(config.matches), bank, config.images, config.encoder, config.device)
    u = report["usage"]
    of_bank = f" of {u['bank_references']}" if u["bank_references"] else ""
    lines = [
        f"{u['images']:,} images matched to {u['references_used']} references{of_bank} ({report['how']}):",
        f"  most used {u['most_used'][0]}: {u['most_used'][1]:,} images; least used {u['least_used'][0]}: "
        f"{u['least_used'][1]:,}; top 5 label {u['top5_share']:.1%}; effective number of references "
        f"{u['effective_references']:.1f}",
    ]
    a = report["agreement"]
    if a is None:
        lines.append(
            "  top-1 agreement: not measured (give --images with the matched images and --bank with its images)"
        )
    else:
        lines.append(
            f"  top-1 agreement with {a['encoder']}: {a['agree']:,} of {a['compared']:,} ({a['rate']:.1%}); "
            f"{a['missing_images']:,} matched images not found under {config.images}"
        )
    return {"matches": report}, lines
