"""Where a zoo name's weights live: its tag's Hub repo, and which tags are published on huggingface.co."""

from __future__ import annotations

from timm.models import split_model_name_tag

from ibzoo.models.catalog import MODEL_INFOS, zoo_name_tag
from ibzoo.weights import PretrainedWeightsUnavailableError

__all__ = ["HUB_ORGANIZATION", "PUBLISHED", "is_unpublished", "not_published_error", "tag_repo_id"]

HUB_ORGANIZATION = "ibzoo"

# The ``name.tag`` entries whose weights are on huggingface.co, in their zoo repo (``tag_repo_id``): add one
# when its repo goes live. Only these are pretrained for timm (``timm.list_pretrained()``, ``pretrained=True``
# through plain timm), so tools that walk timm's pretrained list find real weights. Every other tag keeps
# its recipe and its repo id: ``ibzoo.create_model(name.tag, pretrained=True)`` still loads it from that
# repo on a mirror (``HF_ENDPOINT``) or a local Hub, and otherwise says how to train it.
PUBLISHED: frozenset[str] = frozenset()


def tag_repo_id(name: str) -> str | None:
    """The Hub repo of a zoo name's tag ("ibzoo/resnet18_cifar_simclr_topk.cifar10"), published or not;
    None outside the zoo (see :func:`zoo_name_tag`)."""
    name_tag = zoo_name_tag(name)
    return f"{HUB_ORGANIZATION}/{name_tag}" if name_tag is not None else None


def is_unpublished(name: str) -> bool:
    """Whether ``name`` is a zoo name whose tag has a repo id but no weights on huggingface.co yet."""
    name_tag = zoo_name_tag(name)
    return name_tag is not None and name_tag not in PUBLISHED


def not_published_error(name: str, tried: str = "") -> PretrainedWeightsUnavailableError:
    """The error for ``pretrained=True`` on a zoo name whose weights are not on huggingface.co yet: where
    they would be, how to train them, how to load them from a mirror, and what was ``tried``, if anything."""
    name_tag = zoo_name_tag(name)
    base, tag = split_model_name_tag(name_tag)
    framework = MODEL_INFOS[base].framework
    return PretrainedWeightsUnavailableError(
        f"{name_tag} has no published weights yet (they will be at {tag_repo_id(name)} on "
        f"huggingface.co; ibzoo.list_pretrained() lists the published ones). Train them: python "
        f"train/pretrain.py --model {base} --recipe train/recipes/{framework}_{tag}.yaml --output-dir RUN "
        f"(README, Pretraining), then load 'local-dir:RUN/model'; or serve the repo from a mirror "
        f"(HF_ENDPOINT) and load it with ibzoo.create_model({name_tag!r}, pretrained=True)."
        + (f" Tried: {tried}." if tried else "")
    )
