"""Registry-driven checks: every zoo name is covered without anyone listing it."""

import dataclasses
from pathlib import Path

import pytest
import timm
import torch
import yaml

import ibzoo
from ibzoo.frameworks import FRAMEWORK_NAMES as FRAMEWORKS
from ibzoo.frameworks import get_framework
from ibzoo.models import catalog, zoo
from ibzoo.models.catalog import MODEL_INFOS, WITHHELD, paper_projector_config
from ibzoo.models.datasets import DATASETS
from ibzoo.models.publication import PUBLISHED, tag_repo_id
from ibzoo.names import PROJECTORS
from ibzoo.weights import PretrainedWeightsUnavailableError

ZOO_NAMES = sorted(MODEL_INFOS)
RECIPES = Path(__file__).resolve().parents[2] / "train" / "recipes"


def _input_for(name: str, batch: int = 2) -> torch.Tensor:
    size = 32 if "cifar" in name else 64  # any size works for the ImageNet stem; keep the test fast
    return torch.randn(batch, 3, size, size)


def test_every_backbone_framework_projector_combination_is_registered_or_withheld():
    assert len(ZOO_NAMES) + len(WITHHELD) == 4 * len(FRAMEWORKS) * len(PROJECTORS)
    assert not WITHHELD.keys() & set(ZOO_NAMES)
    assert set(ibzoo.list_models()) == set(ZOO_NAMES)
    assert set(ibzoo.list_models("*_simclr_topk")) == {n for n in ZOO_NAMES if n.endswith("_simclr_topk")}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_zoo_name_is_a_timm_model_with_its_tags(name):
    info = ibzoo.model_info(name)
    assert timm.is_model(name) and timm.models.get_pretrained_cfg(name).architecture == name
    tags = timm.list_models(f"{name}.*", include_tags=True)
    assert sorted(tags) == sorted(f"{name}.{tag}" for tag in info.pretrained_tags)


# The backbone depends on the backbone name alone: one zoo name per backbone is built and run, rotating
# through the frameworks so that each is exercised.
@pytest.mark.parametrize(
    "name",
    [f"{backbone}_{FRAMEWORKS[i % len(FRAMEWORKS)]}_mlp" for i, backbone in enumerate(catalog.BACKBONES)],
)
def test_zoo_name_builds_the_same_backbone_through_ibzoo_and_timm(name):
    torch.manual_seed(0)
    ours = ibzoo.create_model(name).eval()
    torch.manual_seed(0)
    theirs = timm.create_model(name).eval()
    x = _input_for(name)
    features = ours(x)
    info = ibzoo.model_info(name)
    expected_width = 512 if info.architecture.startswith("resnet18") else 2048
    assert features.shape == (2, expected_width) == (2, ours.num_features)
    torch.testing.assert_close(features, theirs(x))
    assert ours.pretrained_cfg["architecture"] == name
    assert ours.pretrained_cfg["input_size"][-1] == (32 if "cifar" in name else 224)


def _small(projector_config):
    """The recipe's 100000 top-k latents are the benchmark's business; tests use a few hundred."""
    if projector_config.topk_latents:
        return dataclasses.replace(projector_config, topk_latents=256, topk_k=16)
    return projector_config


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_zoo_name_trains_its_backbone_at_initialisation(name):
    """The rule every name keeps: through its real projector (the recipe's size: 100000 top-k latents),
    the loss of a fresh model sends a non-zero, finite gradient into the backbone. A head that rounds its
    fresh output to a constant (Barlow Twins' top-k + 3-level FSQ before standardization) fails here."""
    torch.manual_seed(0)
    model = ibzoo.create_pretraining_model(name)
    # Only the backbone's gradient is asked for: the heads' own weight gradients (2 x 205M entries for a
    # top-k head) would triple the test's time without telling anything more.
    model.projector.requires_grad_(False)
    if model.predictor is not None:
        model.predictor.requires_grad_(False)
    output = model.compute_loss([_input_for(name, batch=8), _input_for(name, batch=8)])
    output.loss.backward()
    gradients = [p.grad for p in model.backbone.parameters()]
    assert torch.isfinite(output.loss)
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)
    assert sum(g.abs().sum().item() for g in gradients) > 0
    assert (output.mutual_information is not None) == (model.objective_config.mi_weight > 0)


@pytest.mark.parametrize("name", ["resnet18_cifar_simclr_topk_fsq", "resnet18_cifar_barlow_mlp_mi"])
def test_pretraining_model_trains_every_parameter(name):
    model = ibzoo.create_pretraining_model(
        name, projector_config=_small(ibzoo.model_info(name).projector_config)
    )
    output = model.compute_loss([_input_for(name, batch=4), _input_for(name, batch=4)])
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert [
        n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ] == []


def test_recipes_follow_the_paper():
    simclr = ibzoo.model_info("resnet18_cifar_simclr_topk")
    assert simclr.objective_config.temperature == 0.2
    assert simclr.optimizer_config.lr == 0.4 and simclr.batch_size == 256 and simclr.epochs == 200
    assert (simclr.projector_config.topk_latents, simclr.projector_config.topk_k) == (100_000, 1_000)
    assert simclr.projector_config.hidden_features == ()  # the MLP is replaced entirely
    barlow = ibzoo.model_info("resnet18_cifar_barlow_topk_fsq")
    assert barlow.projector_config.hidden_features == (2048,) and barlow.projector_config.fsq_levels == 3
    # The reference's independent autoencoder init, except Barlow Twins' tied one (ibzoo's deviation).
    assert simclr.projector_config.topk_init == "independent" and barlow.projector_config.topk_init == "tied"
    assert ibzoo.model_info("resnet18_vicreg_topk").projector_config.topk_init == "independent"
    assert catalog.get_model_info("resnet18_barlow_topk", withheld=True).projector_config.topk_init == "tied"
    assert ibzoo.model_info("resnet18_simclr_fsq").projector_config.fsq_levels == 30
    assert ibzoo.model_info("resnet18_cifar_simclr_mlp_mi").objective_config.mi_weight == 1e-4
    assert ibzoo.model_info("resnet18_barlow_mlp_mi").objective_config.mi_weight == 1e-2
    # classifier_lr of scripts/pretrain/{cifar,imagenet-100}/{simclr,barlow}.yaml
    assert (simclr.online_classifier_lr, barlow.online_classifier_lr) == (0.1, 0.15)
    assert ibzoo.model_info("resnet18_barlow_mlp.fmnist").online_classifier_lr == 0.15  # the CIFAR recipe
    assert ibzoo.model_info("resnet18_barlow_mlp").online_classifier_lr == 0.1


def test_tags_name_their_hub_repos():
    tags = ibzoo.list_models("resnet18_cifar_simclr_topk.*", include_tags=True)
    assert tags == [f"resnet18_cifar_simclr_topk.{tag}" for tag in ("cifar10", "cifar100")]
    assert ibzoo.list_models("resnet18_simclr_topk.*", include_tags=True) == [
        "resnet18_simclr_topk.fmnist",
        "resnet18_simclr_topk.in100",
    ]
    assert tag_repo_id("resnet18_cifar_simclr_topk.cifar100") == "ibzoo/resnet18_cifar_simclr_topk.cifar100"
    assert tag_repo_id("resnet18_cifar_simclr_topk") == "ibzoo/resnet18_cifar_simclr_topk.cifar10"  # default
    assert tag_repo_id("resnet18_cifar_simclr_topk.imagenet") is None and tag_repo_id("resnet18") is None
    cfg = timm.models.get_pretrained_cfg("resnet18_cifar_simclr_topk.cifar100")
    assert cfg.mean == pytest.approx((0.5071, 0.4865, 0.4409))
    assert ibzoo.create_model("resnet18_cifar_simclr_topk.cifar100").pretrained_cfg["tag"] == "cifar100"


def test_only_published_tags_are_pretrained_for_timm():
    """timm's pretrained list, which tools walk to download weights, holds only weights that exist."""
    zoo_pretrained = {name for name in timm.list_pretrained() if name.split(".")[0] in MODEL_INFOS}
    assert zoo_pretrained == set(PUBLISHED) == set(ibzoo.list_pretrained())
    for name_tag in ibzoo.list_models(include_tags=True):
        has_repo = timm.models.get_pretrained_cfg(name_tag).hf_hub_id is not None
        assert has_repo == (name_tag in PUBLISHED), name_tag


def test_publishing_a_tag_gives_timm_its_repo(monkeypatch):
    monkeypatch.setattr(zoo, "PUBLISHED", frozenset({"resnet18_simclr_mlp.fmnist"}))
    info = MODEL_INFOS["resnet18_simclr_mlp"]
    assert zoo._pretrained_cfg(info, "fmnist")["hf_hub_id"] == "ibzoo/resnet18_simclr_mlp.fmnist"
    assert zoo._pretrained_cfg(info, "in100")["hf_hub_id"] is None


@pytest.mark.parametrize("create", [timm.create_model, ibzoo.create_model], ids=["timm", "ibzoo"])
def test_unpublished_weights_say_how_to_train_them(create, local_hub):
    # Plain timm would warn and hand out random weights under the pretrained name; ibzoo tries the zoo
    # repo (a mirror or local Hub may serve it) and, when it is missing there too, says the same.
    with pytest.raises(
        PretrainedWeightsUnavailableError,
        match=r"resnet18_cifar_barlow_fsq\.cifar100 has no published weights yet .*"
        r"--recipe train/recipes/barlow_cifar100\.yaml.*HF_ENDPOINT",
    ):
        create("resnet18_cifar_barlow_fsq.cifar100", pretrained=True)


def test_unknown_tag_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"resnet18_cifar_simclr_topk\.cifar10"):
        ibzoo.create_model("resnet18_cifar_simclr_topk.imagenet")


def test_paper_projector_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="Unknown framework 'dino'; choose one of simclr, barlow, byol"):
        paper_projector_config("dino", "mlp")
    with pytest.raises(ValueError, match="choose one of mlp, fsq"):
        paper_projector_config("simclr", "vq")


@pytest.mark.parametrize("name_tag", ibzoo.list_models(include_tags=True))
def test_every_tag_names_its_hub_repo_and_has_a_recipe(name_tag):
    name, tag = name_tag.split(".")
    assert tag_repo_id(name_tag) == f"ibzoo/{name_tag}"
    recipe = RECIPES / f"{ibzoo.model_info(name).framework}_{tag}.yaml"
    assert recipe.is_file(), f"{name_tag} has no recipe {recipe}"
    assert yaml.safe_load(recipe.read_text())["data"]["dataset"] == DATASETS[tag].hf_dataset


@pytest.mark.parametrize(
    "name", ["resnet18_cifar_simclr_mlp", "resnet18_barlow_topk_fsq", "resnet50_simclr_fsq"]
)
def test_zoo_backbones_start_every_batchnorm_gamma_at_one(name):
    """The reference builds torchvision's resnet18(): no zero-init residuals, which timm has by default."""
    gammas = [m.weight for m in ibzoo.create_model(name).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert gammas and all(torch.equal(g, torch.ones_like(g)) for g in gammas)
    # What pretraining starts from is what create_model builds.
    pretraining = ibzoo.create_pretraining_model(
        name, projector_config=_small(ibzoo.model_info(name).projector_config)
    )
    assert all(
        torch.equal(m.weight, torch.ones_like(m.weight))
        for m in pretraining.backbone.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    timm_init = ibzoo.create_model(name, zero_init_last=True)
    last = [block.bn3 if hasattr(block, "bn3") else block.bn2 for block in timm_init.layer1]
    assert all(torch.equal(bn.weight, torch.zeros_like(bn.weight)) for bn in last)


def test_a_tag_takes_the_recipe_of_its_dataset():
    """resnet18 at 32 px (.fmnist) trains with the CIFAR recipe; untagged, with the ImageNet-100 one."""
    small, large = (
        ibzoo.model_info("resnet18_simclr_mlp_mi.fmnist"),
        ibzoo.model_info("resnet18_simclr_mlp_mi"),
    )
    assert (small.family, large.family) == ("cifar", "imagenet")
    assert (small.projector_config.hidden_features, small.projector_config.out_features) == ((2048,), 256)
    assert (large.projector_config.hidden_features, large.projector_config.out_features) == ((4096,), 512)
    assert (small.optimizer_config.lr, small.objective_config.mi_weight, small.epochs) == (0.4, 1e-4, 200)
    assert (large.optimizer_config.lr, large.objective_config.mi_weight, large.epochs) == (0.3, 1e-2, 100)
    assert small.sync_batchnorm and large.sync_batchnorm  # every reference yaml sets it
    assert ibzoo.model_info("resnet18_cifar_simclr_mlp.cifar10") == ibzoo.model_info(
        "resnet18_cifar_simclr_mlp"
    )
    # The standard stem at 32 px ends in a 1x1 map, the CIFAR stem in 4x4.
    assert timm.models.get_pretrained_cfg("resnet18_simclr_mlp.fmnist").pool_size == (1, 1)
    assert timm.models.get_pretrained_cfg("resnet18_cifar_simclr_mlp.cifar10").pool_size == (4, 4)
    assert timm.models.get_pretrained_cfg("resnet18_simclr_mlp.in100").pool_size == (7, 7)


@pytest.mark.parametrize("name", sorted(WITHHELD))
def test_a_withheld_pair_has_no_zoo_name_and_says_why_and_how_to_build_it(name):
    """A name that cannot keep the zoo's promise leaves it: every door refuses it with the reason and the
    way to build the pair anyway, which works."""
    info = catalog.get_model_info(name, withheld=True)
    reason = get_framework(info.framework).withheld[info.projector]
    assert info.projector in PROJECTORS and reason
    assert not timm.is_model(name) and name not in ibzoo.list_models(include_tags=True)
    build = f"{info.architecture!r}, zero_init_last=False"
    how = f"create_pretraining_model({build}, framework={info.framework!r}, projector={info.projector!r})"
    train = f"train/pretrain.py --model {name}.{info.default_tag} --experiment"
    for door in (ibzoo.model_info, ibzoo.create_model, ibzoo.create_pretraining_model):
        with pytest.raises(KeyError, match="is not in the zoo") as refused:
            door(f"{name}.{info.pretrained_tags[-1]}")
        assert reason in str(refused.value) and how in str(refused.value)
        assert train.replace(info.default_tag, info.pretrained_tags[-1]) in str(refused.value)
    with pytest.raises(KeyError) as refused:
        ibzoo.create_model(f"{name}.no_such_tag")  # the advice names a tag that exists
    assert train in str(refused.value)
    # What the error advises builds the pair as the recipe has it, the zoo's init included.
    model = ibzoo.create_pretraining_model(
        info.architecture,
        zero_init_last=False,
        framework=info.framework,
        projector=info.projector,
        projector_config=_small(info.projector_config),
    )
    assert model.projector_config.topk_init == info.projector_config.topk_init
    gammas = [m.weight for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert gammas and all(torch.equal(g, torch.ones_like(g)) for g in gammas)
