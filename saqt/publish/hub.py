"""``saqt publish --push-to-hub``: a finished, verified published set uploaded to a Hugging Face Hub dataset repository.

Exactly the files the set's SHA256SUMS lists, and SHA256SUMS itself, go up in one commit (huggingface_hub's
``create_repo`` and ``create_commit``). The push deletes or replaces only what an earlier push wrote: the card and the
``data/`` files that the repository's SHA256SUMS lists, each still holding the content listed there. Shards of that
set which are not part of the new one are deleted in the same commit, so the repository never mixes two sets. That
SHA256SUMS counts only if the card it lists is a saqt card; a ``data/`` file, card or SHA256SUMS that no earlier push
wrote (or that changed since) makes the push refuse, touching nothing, and a push writes nothing outside them.
The commit names the revision that was inspected as its parent, so the Hub refuses it if the repository moved since.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from saqt.core.context import DEFAULT_CONTEXT, RunContext
from saqt.core.errors import SaqtError
from saqt.core.network import hub_unreachable
from saqt.core.shards import sha256_file
from saqt.core.stage_contract import CARD, SUMS, published_file, read_sums
from saqt.label.stage_configs import PublishConfig, PublishError
from saqt.publish.publish_stage import run_publish
from saqt.read.api import SaqtSet, VerifyError
from saqt.read.card import is_saqt_card

VERIFY_SAMPLE = 16  # images decoded before an upload, beyond every file's checksum


class HubError(SaqtError):
    """The set cannot be pushed to the Hub (bad repository id, refused token, no network)."""


def hub_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises for a refused request or an unreachable server: its HTTP errors, OS errors, and
    the transport errors of whichever HTTP library this huggingface_hub version uses."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [HfHubHTTPError, OSError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def uploads(folder: Path) -> list[str]:
    """The files of the published set in ``folder``, as paths in the repository: SHA256SUMS and all it lists."""
    return [SUMS, *sorted(read_sums((folder / SUMS).read_text()))]


def check_repo_id(repo_id: str) -> None:
    """HubError unless ``repo_id`` is a Hub repository id ``ORG/NAME``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(
            f"--push-to-hub {repo_id}: not a Hub repository id; give ORG/NAME, e.g. my-lab/saqt-iqa"
        ) from None
    if repo_id.count("/") != 1:
        raise HubError(f"--push-to-hub {repo_id}: give ORG/NAME (the owner and the dataset's name)")


def check_hub_reachable(repo_id: str, endpoint: str | None = None) -> None:
    """HubError, in one line and at once, where the Hub cannot be reached (``saqt.core.network.hub_unreachable``)."""
    from huggingface_hub import constants

    if why := hub_unreachable(endpoint):
        raise HubError(
            f"pushing to {endpoint or constants.ENDPOINT}/datasets/{repo_id} failed: {why}; nothing pushed "
            "(to publish without the Hub, give --out FOLDER and leave out --push-to-hub)"
        )


def check_push(out: str | None, repo_id: str | None) -> None:
    """Refuse at once, before any work, a publish with nowhere to go (no ``out``, no ``repo_id``), a push of a set
    written to a remote ``out``, and a bad or unreachable Hub repository: PublishError or HubError, in one line."""
    _check_places(out, repo_id)
    if repo_id:
        check_repo_id(repo_id)
        check_hub_reachable(repo_id)


def _check_places(out: str | None, repo_id: str | None) -> None:
    if out is None and repo_id is None:
        raise PublishError("give --out (a folder or fsspec URL), --push-to-hub ORG/NAME, or both")
    if repo_id and out and "://" in out and not out.startswith("file://"):
        raise PublishError("--push-to-hub uploads a local folder: give --out a local folder, or leave it out")


def publish_and_push(
    config: PublishConfig,
    out: str | None,
    repo_id: str | None,
    ctx: RunContext = DEFAULT_CONTEXT,
    *,
    private: bool = False,
    token: str | None = None,
    published: Callable[[dict], None] | None = None,
) -> tuple[dict, str | None]:
    """Publish to ``out`` (``saqt.publish.publish_stage.run_publish``), or with no ``out`` to a scratch folder in
    ``config.staging`` that is removed afterwards; then, given a ``repo_id``, push the set there (:func:`push_to_hub`).
    ``published`` is called with the card's front matter as soon as the set is written, before the push. Returns
    the front matter and the repository's URL (None without a push). :func:`check_push` refuses a bad ``out`` or
    ``repo_id`` before the config is made; a push checks the repository again."""
    _check_places(out, repo_id)
    with tempfile.TemporaryDirectory(prefix="saqt-hub-", dir=config.staging) if out is None else nullcontext() as tmp:
        target = out or str(Path(tmp) / "published")
        meta = run_publish(config, target, ctx)
        if published:
            published(meta)
        url = push_to_hub(Path(target.removeprefix("file://")), repo_id, private, token) if repo_id else None
    return meta, url


def push_to_hub(
    folder: Path, repo_id: str, private: bool = False, token: str | None = None, endpoint: str | None = None
) -> str:
    """Verify the published set in ``folder``, then upload it to the dataset repository ``repo_id`` (created if
    missing; ``private`` applies to a new one). Returns the repository's URL; HubError in one line otherwise."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_repo_id(repo_id)
    check_hub_reachable(repo_id, endpoint)
    try:
        verified = SaqtSet("published", str(folder)).verify(VERIFY_SAMPLE)
    except VerifyError as err:
        raise HubError(f"{folder} is not an intact published set, not uploaded: {err}") from None
    files = uploads(folder)
    if strays := [p for p in files if not published_file(p)]:
        raise HubError(f"{folder}: {SUMS} lists {', '.join(strays[:3])}, which a push never writes; not uploaded")
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{api.endpoint}/datasets/{repo_id}"
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.repo_info(repo_id, repo_type="dataset", files_metadata=True)
        stale = [p for p in earlier_push(api, repo_id, info, where) if p.startswith("data/") and p not in files]
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p in files]
        operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
        api.create_commit(
            repo_id,
            operations,
            repo_type="dataset",
            commit_message=f"saqt publish: {verified.rows:,} rows in {len(files)} files",
            parent_commit=info.sha,
        )
    except hub_errors() as err:
        reason = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        said = getattr(err, "server_message", None)
        reason += f" ({said.splitlines()[0]})" if said and said.strip() and said.splitlines()[0] not in reason else ""
        raise HubError(f"pushing to {where} failed: {reason}") from None
    return str(url)


def earlier_push(api, repo_id: str, info, where: str) -> list[str]:
    """The files of repository revision ``info`` (a ``repo_info`` with files' metadata) that an earlier push wrote
    and a push may replace or delete: those its SHA256SUMS lists (the card and ``data/`` files only), with the
    content listed, provided the card it lists is a saqt card (a ``sha256sum`` listing of someone's own files vouches
    for nothing). HubError, naming a few, if the card, SHA256SUMS or a ``data/`` file is not one of them."""
    present = {s.rfilename: s for s in info.siblings or []}
    with tempfile.TemporaryDirectory(prefix="saqt-hub-") as scratch:

        def download(path: str) -> Path:
            return Path(api.hf_hub_download(repo_id, path, repo_type="dataset", revision=info.sha, local_dir=scratch))

        def content(path: str) -> str:  # its SHA-256: the LFS metadata's, or the (small, non-LFS) file's own
            sibling = present[path]
            return sibling.lfs.sha256 if sibling.lfs else sha256_file(download(path))

        listed = _listed_by_a_push(download, content, present) if SUMS in present else {}
        foreign = sorted(
            p for p in present if published_file(p) and p != SUMS and (p not in listed or listed[p] != content(p))
        )
        foreign += [SUMS] if SUMS in present and not listed else []
    if foreign:
        raise HubError(
            f"{where} holds files no earlier saqt push wrote, or changed since ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}): nothing pushed; a push replaces only the set it pushed: "
            "delete them from the repository yourself (its history keeps them) or push to another repository"
        )
    return sorted(p for p in listed if published_file(p) and p != SUMS and p in present)


def _listed_by_a_push(download, content, present: dict) -> dict[str, str]:
    """The repository's SHA256SUMS as ``{path: sha256}`` if an earlier saqt push wrote it: readable, listing the card
    with its present content, and that card a saqt card (front matter with a ``saqt:`` dataset id); else ``{}``."""
    try:
        listed = read_sums(download(SUMS).read_text(encoding="utf-8"))
        if CARD not in listed or CARD not in present or listed[CARD] != content(CARD):
            return {}
        return listed if is_saqt_card(download(CARD).read_text(encoding="utf-8")) else {}
    except (SaqtError, UnicodeDecodeError):
        return {}  # not a manifest and card saqt wrote: they vouch for no file
