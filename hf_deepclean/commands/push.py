"""``hf-deepclean push OUTPUT_DIR --repo_id NAME``: upload an unlearned model and its card to the Hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arguments import parse_arguments
from ..errors import ConfigError
from ..hub import push_unlearned_model
from ..outputs import require_complete


@dataclass
class PushArguments:
    """Args:
    output_dir: The folder `hf-deepclean unlearn` wrote (model, card, report).
    repo_id: Hub repository, e.g. ``you/model-unlearned``.
    public: Make the repository public (default: private, an unlearned model can still be sensitive).
    overwrite: Push into an existing repository, replacing its files.
    include_fisher: Also upload the mask and Fisher files (``_*``), kept local by default.
    token: Hub token (default: the logged-in token or HF_TOKEN); never printed.
    commit_message: Commit message of the upload.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Folder written by `hf-deepclean unlearn`."})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repository id, e.g. you/model-unlearned."})
    public: bool = field(default=False, metadata={"help": "Create a public repository (default: private)."})
    overwrite: bool = field(default=False, metadata={"help": "Push into an existing repository, replacing its files."})
    include_fisher: bool = field(default=False, metadata={"help": "Also upload the _* mask and Fisher files."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: logged-in token or HF_TOKEN)."})
    commit_message: str = field(
        default="Upload unlearned model (hf_deepclean)", metadata={"help": "Commit message of the upload."}
    )


def run(argv: list[str]) -> int:
    # `push OUTPUT_DIR --repo_id ...`: the folder may come first, without a flag.
    if argv and not argv[0].startswith("-"):
        argv = ["--output_dir", argv[0], *argv[1:]]
    (args,) = parse_arguments((PushArguments,), argv, prog="hf-deepclean push", description=__doc__.splitlines()[0])
    if not args.output_dir or not args.repo_id:
        raise ConfigError("push needs the model folder and --repo_id: hf-deepclean push OUTPUT_DIR --repo_id you/name")
    require_complete(args.output_dir)

    url = push_unlearned_model(
        args.output_dir, args.repo_id, token=args.token, private=not args.public, overwrite=args.overwrite,
        include_fisher=args.include_fisher, commit_message=args.commit_message,
    )
    print(f"Pushed {args.output_dir} to {url} ({'public' if args.public else 'private'}).")
    return 0
