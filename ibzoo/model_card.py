"""The README.md model card of a published checkpoint, rendered from its config.json.

The template lives in ``hub_cards/model_card.md`` at the top of the repository, installed as the
package ``ibzoo.hub_cards`` and read with :mod:`importlib.resources`, so that a wheel renders cards as a
checkout does. It is Jinja, the format of huggingface_hub's ``ModelCard.from_template``; its YAML front
matter is a :class:`huggingface_hub.ModelCardData`, so the Hub indexes the card as a timm
image-feature-extraction model with linear-probe and k-NN accuracy in its model-index. A checkpoint
from a projector benchmark (train/benchmark_fmnist.py) also carries
``ibzoo.benchmark = {"description": ..., "table": ...}`` in its config, shown as a comparison section.
The card is only rendered here: ``ModelCard.validate`` / ``push_to_hub`` would post
to the public Hub whatever ``HF_ENDPOINT`` says, so :func:`ibzoo.hub.push_to_hub` uploads it as a file.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ibzoo.frameworks import FRAMEWORK_TITLES, FRAMEWORKS
from ibzoo.models.publication import tag_repo_id
from ibzoo.names import REPO_ID

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+; the annotations are never evaluated
    from importlib.resources.abc import Traversable

__all__ = ["CARD_TEMPLATE", "RESULT_METRICS", "render_model_card"]

CARD_TEMPLATE: Traversable = resources.files("ibzoo.hub_cards") / "model_card.md"
# ibzoo.evaluation.evaluate_backbone's keys for the model-index: top-1 accuracies (%) on the pretraining data.
RESULT_METRICS = {"linear_top1": "linear-probe top-1 accuracy", "knn_top1": "k-NN top-1 accuracy"}
_TAGS = ("image-feature-extraction", "timm", "self-supervised", "ibzoo")
_IDENTIFIER = re.compile(r"[\w.-]+")
_MARKDOWN = re.compile(r"([\\`*_\[\]|#~!])")


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def _escaped(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", html.escape(text, quote=False))


def _text(value: Any) -> str:
    """``value`` as inert Markdown text on one line: a user's dataset or model name cannot start a heading,
    a table row or a link, nor land as raw HTML."""
    return _escaped(_one_line(value))


def _code(value: Any) -> str:
    """``value`` for a code span inside a table cell: one line, no backticks, pipes escaped."""
    return _one_line(value).replace("`", "'").replace("|", "\\|")


def _text_keeping_code(value: Any) -> str:
    """Like :func:`_text`, but code spans (`...`) stay code: the benchmark's own text uses them."""
    # The text between code spans keeps its spaces: "Every `x` model" must not become "Every`x`model".
    parts = re.split(r"(`[^`]+`)", _one_line(value))
    return "".join(part if part.startswith("`") and len(part) > 1 else _escaped(part) for part in parts)


def _padded(cell: str) -> str:
    core = cell.strip()
    return cell.replace(core, _text_keeping_code(core), 1) if core else cell


def _benchmark(benchmark: Any) -> dict[str, str] | None:
    """The benchmark section as inert Markdown: the description on one line, the table's rows cell by cell."""
    if not isinstance(benchmark, Mapping):
        return None
    rows = [
        row.strip() for row in str(benchmark.get("table", "")).splitlines() if row.strip().startswith("|")
    ]
    cells = re.compile(r"[^|]+")  # escaped one by one, their padding kept
    table = "\n".join(cells.sub(lambda cell: _padded(cell.group()), row) for row in rows)
    return {"description": _text_keeping_code(benchmark.get("description", "")), "table": table}


def _identifier(value: Any, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``_.-``), which reads the same in text and code."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"The checkpoint's {what} {value!r} is not a model name; re-save the checkpoint.")
    return value


def _projector_description(kind: str, projector: Mapping[str, Any], objective: Mapping[str, Any]) -> str:
    sparse = f"{projector.get('topk_k')} of {projector.get('topk_latents')} latents active" + (
        ", encoder and decoder tied at initialization as in Gao et al., 2024 (ibzoo's deviation from the "
        "reference code's independent init, with which this framework's head collapsed the encoder)"
        if projector.get("topk_init") == "tied"
        else ""
    )
    descriptions = {
        "mlp": "the framework's plain MLP projector (the baseline)",
        "fsq": f"an MLP projector quantized to {projector.get('fsq_levels')} levels per dimension",
        "topk": f"a sparse top-k autoencoder projector ({sparse})",
        "topk_fsq": f"a sparse top-k autoencoder projector ({sparse}) quantized to "
        f"{projector.get('fsq_levels')} levels"
        + (
            ", each output dimension standardized over the batch before quantization (ibzoo's deviation "
            "from the reference code, which never trained this pair: without it the fresh head's outputs "
            "round to 0 and no gradient reaches the encoder)"
            if projector.get("fsq_standardize")
            else ""
        ),
        "mlp_mi": f"an MLP projector trained with the matrix mutual-information regularizer "
        f"(weight {objective.get('mi_weight')})",
    }
    return descriptions.get(kind, f"a {kind!r} projector")


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as ("a.b", "value") rows; unset (None) values are left out."""
    rows = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            rows += _flatten(value, f"{prefix}{key}.")
        elif value is not None:
            shown = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            rows.append((f"{prefix}{key}", shown or "()"))
    return rows


def render_model_card(
    config: Mapping[str, Any],
    *,
    repo_id: str,
    curves_file: str | None = None,
    template: Path | Traversable = CARD_TEMPLATE,
) -> ModelCard:
    """The model card of a checkpoint whose config.json is ``config`` (timm format + "ibzoo" section).

    Args:
        config: The checkpoint's config.json as a dict.
        repo_id: The Hub repo the card is for ("org/name"), shown in the usage snippets.
        curves_file: Name of the training-curves image next to the card, if there is one.
        template: A Jinja model-card template (a path, or a package resource); the default is
            ``hub_cards/model_card.md``, installed as ``ibzoo.hub_cards``.
    """
    if not template.is_file():
        raise FileNotFoundError(
            f"Model-card template {template} not found: ibzoo's own template is hub_cards/model_card.md, "
            "installed with the package as ibzoo.hub_cards; reinstall ibzoo or pass template=."
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo_id {repo_id!r} is not a Hub repo id ('org/name'): {err}") from None
    section = config["ibzoo"]
    model_name = section["model_name"]
    architecture = _identifier(config["architecture"], "architecture")
    dataset = section.get("dataset") or "an unrecorded dataset"
    hub_dataset = dataset if REPO_ID.fullmatch(str(dataset)) else None  # not a local path
    results = section.get("results") or {}
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name=metric_name.removesuffix(" top-1 accuracy") + " (frozen features)",
            dataset_type=hub_dataset,
            dataset_name=hub_dataset,
            metric_type="accuracy",
            metric_name=metric_name,
            metric_value=results[key],
        )
        for key, metric_name in RESULT_METRICS.items()
        if key in results and hub_dataset
    ]
    card_data = ModelCardData(
        model_name=repo_id.rsplit("/", 1)[-1],
        library_name="timm",
        pipeline_tag="image-feature-extraction",
        license=config.get("pretrained_cfg", {}).get("license", "apache-2.0"),
        tags=[*_TAGS, section["framework"], section["projector"]],
        datasets=[hub_dataset] if hub_dataset else None,
        eval_results=eval_results or None,
    )
    # The zoo's own repos load by zoo name; any other repo by its hf-hub: name.
    is_zoo_repo = "." in model_name and repo_id == tag_repo_id(model_name)
    # The training configuration's projector and objective are stored once, as the model's configs (older
    # files hold them in both places, with the same values).
    settings = {
        **(section.get("train_config") or {}),
        "projector": section["projector_config"],
        "objective": section["objective_config"],
    }
    # Every value below that a user or a config.json chose is escaped (_text, _code) or checked to be a
    # plain name (_identifier, validate_repo_id): a card is Markdown that the Hub renders.
    return ModelCard.from_template(
        card_data,
        template_str=template.read_text(encoding="utf-8"),
        model_name=_text(model_name),
        repo_id=repo_id,
        ibzoo_name=model_name if is_zoo_repo else f"hf-hub:{repo_id}",
        architecture=architecture,
        num_features=_text(config.get("num_features")),
        framework_title=_text(FRAMEWORK_TITLES.get(section["framework"], section["framework"])),
        has_target=section["framework"] in FRAMEWORKS and FRAMEWORKS[section["framework"]].has_target,
        projector_description=_text(
            _projector_description(
                section["projector"], section["projector_config"], section["objective_config"]
            )
        ),
        dataset=_text(dataset),
        dataset_link=f"[{_text(dataset)}](https://huggingface.co/datasets/{dataset})"
        if hub_dataset
        else _text(dataset),
        recipe=[(_code(name), _text(value)) for name, value in _flatten(settings)],
        results=[(_text(RESULT_METRICS.get(key, key)), _text(value)) for key, value in results.items()],
        benchmark=_benchmark(section.get("benchmark")),
        curves_file=curves_file,
    )
