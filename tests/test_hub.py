"""Model card, forget-set fingerprint and Hub push, tested against a real local HTTP Hub (tests/hub_server.py).

The server runs on 127.0.0.1 with an ephemeral port in a thread; the real huggingface_hub client
talks to it. In-process tests point the already-imported client at it by patching
``huggingface_hub.constants`` (ENDPOINT and the resolve URL template are read at import); one test
runs a fresh interpreter with only ``HF_ENDPOINT`` set, the way a user would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.torch import save_file

from hf_deepclean.hub import (
    HubPushError,
    forget_fingerprint,
    generate_salt,
    push_unlearned_model,
    record_from_report,
    render_model_card,
    verify_fingerprint,
    write_model_card,
)

try:
    from .hub_server import HubTestServer
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from hub_server import HubTestServer

GOOD_TOKEN = "hf_test_GOODtoken_0123456789"
BAD_TOKEN = "hf_test_BADtoken_9876543210"
FORGET_IDS = ["user-7731-secret", "user-0042-secret", "user-9001-secret"]
SALT = "0f" * 32
REPO = "alice/vit-unlearned"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def isolated_hf(monkeypatch, tmp_path):
    """huggingface_hub online, with its cache, token and registry files under tmp_path (never the user's)."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"), raising=False)
    return monkeypatch


@pytest.fixture
def hub(isolated_hf):
    """The local Hub, with the (already imported) huggingface_hub client pointed at it."""
    with HubTestServer(tokens={GOOD_TOKEN: "alice"}) as server:
        isolated_hf.setenv("HF_ENDPOINT", server.url)
        isolated_hf.setattr(constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        isolated_hf.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        # transformers keeps one shared HfApi, bound to the endpoint of its first use (an earlier test's server).
        isolated_hf.setattr("transformers.utils.hub._hf_api", None, raising=False)
        yield server


def _scores(retain, forget, test, mia_loss_lr, mia_efficacy, **extra) -> dict:
    keys = ("retain_accuracy", "forget_accuracy", "test_accuracy", "mia_loss_lr", "mia_efficacy")
    return dict(zip(keys, (retain, forget, test, mia_loss_lr, mia_efficacy)), **extra)


def _report() -> dict:
    return {
        "method": "deepclean",
        "scenario": "forget-ids",
        "forget": {"size": 3, "labels": None, "kind": "ids", "fingerprint": forget_fingerprint(FORGET_IDS, SALT)},
        "metrics": _scores(0.97, 0.55, 0.94, 0.52, 0.88),
        "gold": _scores(0.98, 0.56, 0.95, 0.5, 0.9, time_s=90.0),
        "original": _scores(0.99, 1.0, 0.95, 0.71, 0.2),
        "deltas": _scores(-0.01, -0.01, -0.01, 0.02, -0.02),
        "selection": {"threshold": 7.5, "top_fraction": None, "selected_fraction": 0.021, "num_selected": 321},
        "time_s": {"fisher": 1.5, "train": 4.5, "total": 6.5},
    }


def _record(**extra) -> dict:
    hyperparameters = {
        "estimator": "empirical",
        "reset": "zero",
        "num_train_epochs": 2,
        "threshold": 7.5,
        # these must never reach the card
        "forget_ids": FORGET_IDS,
        "forget_ids_file": "/home/alice/user-7731-secret.txt",
        "hub_token": GOOD_TOKEN,
    }
    record = record_from_report(
        _report(), base_model="google/vit-base-patch16-224", dataset="beans", hyperparameters=hyperparameters, **extra
    )
    record["forget"]["ids"] = list(FORGET_IDS)  # a careless caller: still must not leak
    return record


@pytest.fixture(scope="module")
def model_template(tmp_path_factory):
    """A tiny ViT saved with its card, a Fisher file, a checkpoint and logs (built once per module)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=16, num_labels=3,
    )
    folder = tmp_path_factory.mktemp("unlearned")
    ViTForImageClassification(config).save_pretrained(folder)
    write_model_card(folder, _record())
    (folder / "unlearning_report.json").write_text(json.dumps(_report()))
    save_file({"w": torch.ones(2)}, str(folder / "_fisher_forget.safetensors"), metadata={"ids": ",".join(FORGET_IDS)})
    (folder / "_selection_mask.json").write_text(json.dumps({"forget_ids": FORGET_IDS}))
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"user-7731-secret")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out").write_bytes(b"user-7731-secret")
    return folder


@pytest.fixture
def model_dir(model_template, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(model_template, folder)
    return folder


def _digest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------ fingerprint
def test_fingerprint_is_deterministic_salted_and_order_insensitive():
    fp = forget_fingerprint(FORGET_IDS, SALT)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    assert forget_fingerprint(list(reversed(FORGET_IDS)) + FORGET_IDS[:1], SALT) == fp
    assert forget_fingerprint(FORGET_IDS, SALT + "x") != fp
    assert forget_fingerprint(FORGET_IDS[:2], SALT) != fp
    assert all(part not in fp for part in FORGET_IDS)


def test_fingerprint_of_indices_accepts_numpy_and_torch():
    fp = forget_fingerprint([3, 1, 2], SALT)
    assert forget_fingerprint(np.array([2, 3, 1]), SALT) == fp
    assert forget_fingerprint(torch.tensor([1, 2, 3]), SALT) == fp
    assert forget_fingerprint([np.int64(1), 2, torch.tensor(3)], SALT) == fp
    assert forget_fingerprint(["1", "2", "3"], SALT) == fp  # ids are compared by their string form


def test_verify_fingerprint_and_salt():
    fp = forget_fingerprint(FORGET_IDS, SALT)
    assert verify_fingerprint(FORGET_IDS[::-1], SALT, fp)
    assert not verify_fingerprint(FORGET_IDS, generate_salt(), fp)
    assert not verify_fingerprint(FORGET_IDS + ["user-1"], SALT, fp)
    salt_a, salt_b = generate_salt(), generate_salt()
    assert salt_a != salt_b and len(salt_a) == 64
    with pytest.raises(ValueError, match="salt"):
        forget_fingerprint(FORGET_IDS, "")
    with pytest.raises(ValueError, match="empty"):
        forget_fingerprint([], SALT)
    with pytest.raises(TypeError, match="single string"):
        forget_fingerprint("user-7731-secret", SALT)


# ------------------------------------------------------------------------------------------ model card
def test_model_card_metadata_table_and_no_forget_ids():
    card = render_model_card(_record())
    text = str(card)
    data = ModelCard(text).data  # re-parsing validates the metadata and the model-index offline
    assert {"machine-unlearning", "deepclean"} <= set(data.tags)
    assert data.base_model == "google/vit-base-patch16-224"
    assert data.datasets == ["beans"]
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results[("retain", "accuracy")] == 0.97
    assert results[("forget", "accuracy")] == 0.55
    assert results[("test", "accuracy")] == 0.94
    assert results[("forget", "mia_loss_lr")] == 0.52
    assert "model-index" in card.data.to_dict()
    # table: unlearned, gold, delta, original
    assert "| Forget accuracy | 0.5500 | 0.5600 | -0.0100 | 1.0000 |" in text
    assert "321 (2.1000% of all weights)" in text and "| Threshold gamma | 7.5 |" in text
    assert "| estimator | empirical |" in text and "| reset | zero |" in text
    assert forget_fingerprint(FORGET_IDS, SALT) in text
    assert "arXiv" in text and "2311.10448" in text and "Gourgoulias" in text
    assert "transformers" in text and "torch" in text and "hf-deepclean" in text
    assert "Speed-up vs retraining" in text
    for secret in FORGET_IDS + [GOOD_TOKEN, SALT, "| forget_ids", "/home/alice"]:
        assert secret not in text


def test_model_card_without_gold_or_original():
    forget = {"size": np.int64(10), "labels": np.array([3, 7]), "kind": "labels"}
    record = record_from_report({"method": "ssd", "forget": forget, "metrics": {"test_accuracy": np.float32(0.9)}})
    text = str(render_model_card(record))
    assert "Gold (retrained)" not in text and "Original |" not in text
    assert "| Forgotten classes | 3, 7 |" in text and "| Forget set size | 10 samples |" in text
    data = ModelCard(text).data
    assert data.eval_results[0].metric_value == 0.9 and "ssd" in data.tags


def test_model_card_names_classes_and_says_auto_chose_the_fraction():
    """issue 23: the card said "classes 8" (not "triangle") and "Top fraction requested | 0.005" beside
    "top_fraction | auto"."""
    from hf_deepclean.evaluation import UnlearningReport

    report = {"method": "deepclean", "scenario": "class",
              "forget": {"size": 40, "labels": [8], "label_names": ["triangle"], "kind": "labels"},
              "metrics": {"test_accuracy": 0.9},
              "selection": {"threshold": 2.5, "top_fraction": 0.005, "selected_fraction": 0.005, "num_selected": 19}}
    record = record_from_report(report, dataset="./shapes", hyperparameters={"top_fraction": "auto"})
    text = str(render_model_card(record))
    assert "| Forgotten classes | 8 (triangle) |" in text
    assert "| Top fraction | 0.005 (chosen by top_fraction=auto) |" in text and "requested" not in text
    assert "| top_fraction | auto |" in text
    assert "classes 8 (triangle)" in UnlearningReport.from_dict(report).to_markdown()
    fixed = record_from_report(report, hyperparameters={"top_fraction": 0.005})
    assert "| Top fraction | 0.005 |" in str(render_model_card(fixed))


def test_write_model_card_is_atomic(tmp_path):
    path = write_model_card(tmp_path / "new", _record())
    assert path == tmp_path / "new" / "README.md"
    assert sorted(p.name for p in path.parent.iterdir()) == ["README.md"]
    assert ModelCard.load(path).data.pipeline_tag == "image-classification"


# ------------------------------------------------------------------------------------------ push
def test_push_then_reload_with_transformers_and_modelcard(hub, model_dir, caplog):
    from transformers import AutoModelForImageClassification

    caplog.set_level(logging.DEBUG)
    before = _digest(model_dir)
    url = push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN)
    assert url == f"{hub.url}/{REPO}"
    assert _digest(model_dir) == before  # nothing local touched

    repo = hub.state.repos[REPO]
    assert repo.private is True and hub.state.create_requests[-1]["visibility"] == "private"
    expected = [".gitattributes", "README.md", "config.json", "model.safetensors", "unlearning_report.json"]
    assert sorted(repo.files) == expected
    # the pushed card names the repo it is in; the local one keeps its placeholder (nothing local touched)
    assert f'from_pretrained("{REPO}")' in repo.files["README.md"].decode()
    assert "<your-namespace>" in (model_dir / "README.md").read_text()
    for path, content in repo.files.items():
        for secret in FORGET_IDS + [GOOD_TOKEN]:
            assert secret.encode() not in content, f"{secret} leaked in {path}"

    reloaded = AutoModelForImageClassification.from_pretrained(REPO, token=GOOD_TOKEN, cache_dir=constants.HF_HUB_CACHE)
    local = AutoModelForImageClassification.from_pretrained(model_dir)
    local_state, remote_state = local.state_dict(), reloaded.state_dict()
    assert local_state.keys() == remote_state.keys()
    assert all(torch.equal(local_state[k], remote_state[k]) for k in local_state)

    card = ModelCard.load(REPO, token=GOOD_TOKEN)
    assert {"machine-unlearning", "deepclean"} <= set(card.data.tags)
    assert card.data.base_model == "google/vit-base-patch16-224"
    assert {r.dataset_split for r in card.data.eval_results} == {"retain", "forget", "test"}
    card.validate()  # the Hub's validate-yaml endpoint accepts it
    assert hub.state.unhandled == []
    assert GOOD_TOKEN not in caplog.text


def test_private_repo_is_hidden_and_public_opt_out(hub, model_dir):
    push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        ModelCard.load(REPO, token=False)  # anonymous readers cannot see a private repo

    push_unlearned_model(model_dir, "alice/public-model", token=GOOD_TOKEN, private=False)
    assert hub.state.create_requests[-1]["visibility"] == "public"
    assert hub.state.repos["alice/public-model"].private is False
    assert ModelCard.load("alice/public-model", token=False).data.library_name == "transformers"


def test_existing_repo_needs_overwrite(hub, model_dir):
    push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN)
    before = _digest(model_dir)
    with pytest.raises(HubPushError, match="already exists") as info:
        push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN)
    assert "overwrite" in str(info.value)
    assert _digest(model_dir) == before
    assert len(hub.state.repos[REPO].commit_messages) == 2  # initial + first push, nothing more

    # a stale remote file disappears and the Fisher files go up only when asked
    hub.state.repos[REPO].files["stale.bin"] = b"old"
    push_unlearned_model(
        model_dir, REPO, token=GOOD_TOKEN, overwrite=True, include_fisher=True, commit_message="second"
    )
    files = hub.state.repos[REPO].files
    assert "stale.bin" not in files
    assert {"_fisher_forget.safetensors", "_selection_mask.json", "model.safetensors"} <= set(files)
    assert not any(path.startswith(("checkpoint-", "runs/")) for path in files)
    assert hub.state.repos[REPO].commit_messages[-1] == "second"
    assert _digest(model_dir) == before


def test_failed_upload_after_create_says_how_to_resume(hub, model_dir):
    hub.state.fail_uploads_with = 403
    before = _digest(model_dir)
    with pytest.raises(HubPushError, match="403") as info:
        push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN)
    assert "overwrite=True" in str(info.value) and _digest(model_dir) == before
    assert sorted(hub.state.repos[REPO].files) == [".gitattributes"]
    hub.state.fail_uploads_with = None
    push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN, overwrite=True)
    assert "model.safetensors" in hub.state.repos[REPO].files


def _assert_token_not_leaked(exc: BaseException, caplog, capfd):
    rendered = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    out, err = capfd.readouterr()
    for text in (str(exc), rendered, caplog.text, out, err):
        assert BAD_TOKEN not in text and GOOD_TOKEN not in text


def test_bad_token_gives_clear_401_without_leaking_it(hub, model_dir, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("huggingface_hub").addHandler(caplog.handler)
    before = _digest(model_dir)
    try:
        with pytest.raises(HubPushError, match="401") as info:
            push_unlearned_model(model_dir, REPO, token=BAD_TOKEN)
    finally:
        logging.getLogger("huggingface_hub").removeHandler(caplog.handler)
    assert "hf auth login" in str(info.value) and "HF_TOKEN" in str(info.value)
    _assert_token_not_leaked(info.value, caplog, capfd)
    assert REPO not in hub.state.repos and _digest(model_dir) == before


def test_unreachable_server_gives_clear_message(model_dir, isolated_hf, caplog, capfd):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    isolated_hf.setattr(constants, "ENDPOINT", endpoint)  # also where huggingface_hub's own side requests go
    before = _digest(model_dir)
    with pytest.raises(HubPushError, match="Cannot reach the Hub") as info:
        push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN, endpoint=endpoint)
    assert endpoint in str(info.value)
    _assert_token_not_leaked(info.value, caplog, capfd)
    assert _digest(model_dir) == before


def test_offline_mode_is_reported(model_dir, isolated_hf):
    isolated_hf.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN, endpoint="http://127.0.0.1:9")


def test_folder_checks_happen_before_any_request(tmp_path, model_dir):
    no_network = "http://127.0.0.1:9"  # would fail as unreachable if it were contacted
    with pytest.raises(HubPushError, match="not a folder"):
        push_unlearned_model(tmp_path / "missing", REPO, token=GOOD_TOKEN, endpoint=no_network)
    (model_dir / "README.md").unlink()
    with pytest.raises(HubPushError, match="README.md"):
        push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN, endpoint=no_network)
    (model_dir / "README.md").write_text("---\nmodel-index: [{results: [{task: 1}]}]\n---\n# card\n")
    with pytest.raises(HubPushError, match="invalid metadata"):
        push_unlearned_model(model_dir, REPO, token=GOOD_TOKEN, endpoint=no_network)
    (model_dir / "README.md").unlink()
    with pytest.raises(HubPushError, match="repo_id"):
        push_unlearned_model(model_dir, "alice/bad//name", token=GOOD_TOKEN, endpoint=no_network, require_card=False)


def test_push_and_reload_in_fresh_process_with_hf_endpoint(hub, model_dir, tmp_path):
    """The user's path: only HF_ENDPOINT and HF_TOKEN set, nothing patched."""
    script = textwrap.dedent(
        f"""
        import torch
        from huggingface_hub import ModelCard
        from transformers import AutoModelForImageClassification
        from hf_deepclean.hub import push_unlearned_model

        url = push_unlearned_model({str(model_dir)!r}, "fresh-model")
        remote = AutoModelForImageClassification.from_pretrained("alice/fresh-model")
        local = AutoModelForImageClassification.from_pretrained({str(model_dir)!r})
        assert all(torch.equal(a, b) for a, b in zip(local.state_dict().values(), remote.state_dict().values()))
        assert "deepclean" in ModelCard.load("alice/fresh-model").data.tags
        print("URL", url)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=GOOD_TOKEN, HF_HOME=str(tmp_path / "fresh_home"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"URL {hub.url}/alice/fresh-model" in done.stdout
    assert hub.state.repos["alice/fresh-model"].private is True
    assert GOOD_TOKEN not in done.stdout + done.stderr


def test_push_command_line(hub, model_dir, capsys):
    from hf_deepclean.cli import main

    assert main(["push", str(model_dir), "--repo_id", REPO, "--token", GOOD_TOKEN]) == 0
    out, err = capsys.readouterr()
    assert f"{hub.url}/{REPO}" in out and "(private)" in out
    assert GOOD_TOKEN not in out + err
    assert hub.state.repos[REPO].private is True
    # A second push without --overwrite is one clear error line, exit 2, the token never printed.
    assert main(["push", str(model_dir), "--repo_id", REPO, "--token", GOOD_TOKEN]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error:") and "already exists" in err and GOOD_TOKEN not in out + err
    assert main(["push", str(model_dir), "--repo_id", "alice/public", "--token", GOOD_TOKEN, "--public"]) == 0
    assert hub.state.repos["alice/public"].private is False


def test_deepclean_trainer_push_to_hub_uses_the_deepclean_card(hub, tmp_path):
    """Trainer's own push_to_hub: private by default, DeepClean's card, mask and Fishers kept local."""
    from hf_deepclean.config import DeepCleanConfig
    from hf_deepclean.trainer import DeepCleanTrainer
    from hf_deepclean.training import load_classifier

    class Samples(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(n)
            self.x, self.y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"pixel_values": self.x[i], "labels": int(self.y[i])}

    args = DeepCleanConfig(
        output_dir=str(tmp_path / "run"), top_fraction=0.1, max_steps=2, use_cpu=True, disable_tqdm=True,
        report_to="none", save_fisher=True, push_to_hub=True, hub_model_id="alice/trainer-push", hub_token=GOOD_TOKEN,
    )
    trainer = DeepCleanTrainer(load_classifier(None, num_labels=4, architecture="resnet"), args,
                               train_dataset=Samples(16), forget_dataset=Samples(4))
    trainer.unlearn()
    trainer.save_model()
    trainer.push_to_hub()
    repo = hub.state.repos["alice/trainer-push"]
    assert repo.private is True
    card = repo.files["README.md"].decode()
    assert "deepclean" in card and "machine-unlearning" in card
    assert "model.safetensors" in repo.files
    assert not any(path.startswith("_") for path in repo.files)  # mask and Fishers stay local
    assert (tmp_path / "run" / "_parameter_mask.safetensors").exists()
    assert (tmp_path / "run" / "_fisher_forget.safetensors").exists()
