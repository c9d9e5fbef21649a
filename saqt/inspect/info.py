"""``saqt info``: what a stage folder holds, in a few lines: its kind, rows, shards, settings and errors."""

from __future__ import annotations

import json
from pathlib import Path

from saqt.core.shards import BANK_MANIFEST, BUILD_ERRORS
from saqt.core.stage_contract import StageError, parse_manifest
from saqt.label.reference_bank import load_bank
from saqt.read.api import SaqtSet, open_set

TRAIN_RESULTS = "results.json"


def _size(folder: Path) -> str:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return f"{total / 2**20:,.1f} MiB"


def _settings(config: dict, keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={config[k]}" for k in keys if config.get(k) not in (None, False, [], ""))


def _build(folder: Path, m: dict) -> list[str]:
    c, counts = m["config"], m["counts"]
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(counts["skipped_by_reason"].items())) or "none"
    return [
        f"saqt build ({'complete' if m['complete'] else 'unfinished: rerun its command to resume'})",
        f"rows: {counts['pristine']:,} pristine, {counts['distorted']:,} distorted "
        f"({'recipes only' if c['recipe_only'] else 'with pixels'})",
        f"shards: {len(m['done'])} of {m['units']} units done, {_size(folder)}",
        f"settings: {_settings(c, ('source', 'root', 'list_file', 'selection', 'split', 'limit', 'per_class', 'seed', 'per_image'))}, "
        f"size={c['size'][0]}x{c['size'][1]}, {len(c['types'])} types x {len(c['levels'])} levels",
        f"skipped: {counts['skipped']} ({skipped}); details in {folder / BUILD_ERRORS}",
        _screen(m.get("screen")),
        f"command: {m.get('command') or '?'}  (toolkit {m.get('toolkit_version', '?')})",
    ]


def _screen(screen: dict | None) -> str:
    if screen is None:
        return "screen: not recorded (a build of an earlier toolkit)"
    if not screen["applied"]:
        return f"screen: off (every decodable image kept); {screen['duplicates']} duplicates dropped"
    looser = ", ".join(f"{k}={v} (default {d})" for k, (v, d) in screen["looser_than_default"].items())
    return (
        f"screen: max_upscale={screen['max_upscale']}, min_jpeg_quality={screen['min_jpeg_quality']}, "
        f"min_side={screen['min_side']}, allow_grey={screen['allow_grey']}"
        f"{'; LOOSER than the defaults: ' + looser if looser else ''}; {screen['screened']} screened, "
        f"{screen['refused']} refused, {screen['duplicates']} of them duplicates"
    )


def _label(folder: Path, m: dict) -> list[str]:
    c, rule, bank = m["config"], m["rule"], m["inputs"]["bank"]
    return [
        f"saqt label ({'complete' if m['complete'] else 'unfinished: rerun its command to resume'})",
        f"rows: {m['counts']['labels']:,} labelled images in {m['counts']['shards']} shards, {_size(folder)}",
        f"build: {c['build']}",
        f"bank: {bank['kind']} at {c['bank']} ({bank['references']} references{', proxy scores' if bank['proxy'] else ''})",
        f"encoder: {m['encoder']['encoder']} ({m['encoder']['weights']}); rule {rule['rule']} k={rule['k']}"
        f"{' T=' + str(rule['temperature']) if rule.get('temperature') is not None else ''}; scale {m['score_scale']}",
        f"self-matches: {m['self_matches']}"
        + (f"; matches given: {m['encoder']['matches']['how']}" if m["encoder"].get("matches") else "")
        + (f"; preset {c['preset']}" if c.get("preset") else ""),
        f"command: {m.get('command') or '?'}  (toolkit {m.get('toolkit_version', '?')})",
    ]


def _published(folder: Path, found: SaqtSet) -> list[str]:
    meta = found.card()
    s, p = meta["saqt"], meta["saqt"]["provenance"]
    splits = ", ".join(f"{x['num_examples']:,} {x['name']}" for x in meta["dataset_info"]["splits"])
    return [
        f"published SAQT-IQA set {s['dataset_id']} ({meta['license']})",
        f"rows: {splits}; {sum(s['files'].values())} shards, {_size(folder)}",
        f"source: {p['source']['name']}; bank {p['bank']['kind']} ({p['bank']['references']} references"
        f"{', proxy' if p['bank']['proxy'] else ''}); encoder {p['encoder']['id']}; rule {p['transfer']['rule']}",
        f"toolkit {p['toolkit_version']}; run `saqt verify {folder}` to check it",
    ]


def _bank(folder: Path) -> list[str]:
    bank = load_bank(folder)  # checks the scores, and a synth bank's files against its manifest
    m = parse_manifest(folder / BANK_MANIFEST)
    return [
        f"labelled bank ({m.get('kind', '?')}, {len(bank.ref_ids)} references"
        f"{', proxy scores' if m.get('proxy') else ''})",
        f"scores: {m.get('score_meaning', '?')}",
        f"skipped: {len(m.get('skipped', []))}; {_size(folder)}",
        f"command: {m.get('command') or '?'}",
    ]


def _training(folder: Path) -> list[str]:
    results = json.loads((folder / TRAIN_RESULTS).read_text())
    lines = ["glint training run"]
    lines += [f"{key}: {json.dumps(value, default=str)[:200]}" for key, value in results.items()]
    return lines


def summarise(folder: Path) -> list[str]:
    """Lines describing ``folder``; a SaqtError if it is not a stage folder this toolkit wrote or a glint run."""
    try:
        found = open_set(folder)
    except StageError:
        if (folder / TRAIN_RESULTS).is_file():
            return _training(folder)
        raise
    kind = found.kind
    try:
        if kind == "published":
            return _published(folder, found)
        if kind == "bank":
            return _bank(folder)
        manifest = found.stage.manifest  # `saqt verify` checks the checksums
        return (_build if kind == "build" else _label)(folder, manifest)
    except (KeyError, TypeError) as err:  # a manifest or card of the right shape that lacks an entry read here
        raise StageError(f"{folder}: its {kind} manifest lacks {err} or holds it in another form") from None
