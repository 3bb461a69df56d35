"""Push a Hub-ready checkpoint folder to the Hugging Face Hub.

    python train/push_to_hub.py RUN_DIR                        # a pretraining run: pushes RUN_DIR/model
    python train/push_to_hub.py FOLDER --repo-id me/my-encoder --revision v2 --private
    python train/push_to_hub.py bench-fmnist/hub/ibzoo/*       # several folders, each to its zoo repo

FOLDER is what ibzoo.hub.save_pretrained wrote (train/pretrain.py writes it to RUN_DIR/model at the end);
a folder without config.json stands for its model/ (ibzoo.loading.published_folder).
Without --repo-id a checkpoint of a zoo name with a dataset tag goes to the zoo's repo for it
(e.g. ibzoo/resnet18_cifar_simclr_topk.cifar10); --repo-id takes one folder only. Log in first
(`hf auth login`) or set HF_TOKEN; set HF_ENDPOINT to push to a mirror. A failed push changes nothing
locally: run the command again.
"""

import argparse
import logging
from pathlib import Path

from ibzoo.hub import push_to_hub, zoo_repo_id
from ibzoo.loading import CheckpointError, load_published, published_folder
from ibzoo.published_source import PublishedSource


def default_repo_id(folder: Path) -> str:
    """The zoo's repo for the checkpoint's model name (recorded in its config.json)."""
    try:
        config = load_published(PublishedSource(folder=folder)).config
    except CheckpointError as error:
        raise SystemExit(str(error)) from None
    model_name = str(config.get("ibzoo", {}).get("model_name", ""))
    repo_id = zoo_repo_id(model_name)
    if repo_id is None:
        raise SystemExit(
            f"{folder} holds {model_name or 'a model'}, which has no zoo repo: pass --repo-id ORG/NAME."
        )
    return repo_id


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folders", nargs="+", type=Path, help="checkpoint folders, or pretraining runs' output folders"
    )
    parser.add_argument("--repo-id", help="ORG/NAME on the Hub (default: the zoo's repo of the model name)")
    parser.add_argument("--revision", help="branch to push to, created if needed (default: main)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--commit-message", help="summary of the commit")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    args = parser.parse_args(argv)
    if args.repo_id is not None and not args.repo_id.strip():
        parser.error("--repo-id is empty: give ORG/NAME, or leave the flag out for the zoo's repo.")
    if args.repo_id and len(args.folders) > 1:
        parser.error(
            f"--repo-id names one repo, but {len(args.folders)} folders were given: push them one by one."
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # Every folder and repo id is resolved before the first upload, so a bad one stops nothing half-done.
    try:
        folders = [published_folder(path) for path in args.folders]
    except FileNotFoundError as error:
        raise SystemExit(f"push_to_hub.py: error: {error}") from None
    targets = [(folder, args.repo_id or default_repo_id(folder)) for folder in folders]
    urls = []
    for folder, repo_id in targets:
        try:
            url = push_to_hub(
                folder,
                repo_id,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
                create_pr=args.create_pr,
            )
        except (CheckpointError, ConnectionError, FileNotFoundError, ValueError) as error:
            # Each message names the folder and the remedy: one line, not a traceback.
            raise SystemExit(f"push_to_hub.py: error: {error}") from None
        print(url)
        urls.append(url)
    return urls


if __name__ == "__main__":
    main()
